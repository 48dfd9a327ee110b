#!/usr/bin/perl
# The reply scanner, checked directly in C (t/unit/scan_check.c) under
# AddressSanitizer and UBSan: every verdict, the same however the reply is
# cut into buffers, and no read outside the reply.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Imgbill::Unit;

Imgbill::Unit::run('scan_check',
                   [qw(scan scan_token api splice openai gemini images
                       ideogram ideogram_legacy compact compact_token
                       request reading form multipart)],
                   [qw(-ljansson)]);
