#!/usr/bin/perl
# The event-stream reader, checked directly in C (t/unit/sse_check.c) under
# AddressSanitizer and UBSan: events split on every kind of line end, data
# lines joined, [DONE], comments, and where "cost" goes, whole and byte by
# byte.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Imgbill::Unit;

Imgbill::Unit::run('sse_check',
                   [qw(sse scan scan_token api splice openai gemini images
                       ideogram ideogram_legacy compact compact_token request
                       reading form multipart)],
                   [qw(-ljansson)]);
