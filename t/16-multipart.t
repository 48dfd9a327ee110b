#!/usr/bin/perl
# The multipart/form-data reader, checked directly in C
# (t/unit/multipart_check.c) under AddressSanitizer and UBSan: each part's
# name, filename, type, size and bytes, every verdict, and a boundary from
# the Content-Type, the same however the body is cut into buffers.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Imgbill::Unit;

Imgbill::Unit::run('multipart_check', [qw(multipart)], []);
