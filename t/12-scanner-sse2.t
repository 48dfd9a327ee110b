#!/usr/bin/perl
# The reply scanner's checks again, built without its AVX2 path: the SSE2
# loop that CPUs without AVX2 run is skipped here otherwise, as this
# machine has AVX2 (t/12-scanner.t).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Imgbill::Unit;

Imgbill::Unit::run('scan_check',
                   [qw(scan scan_token api splice openai gemini images
                       ideogram ideogram_legacy compact compact_token
                       request reading form multipart)],
                   [qw(-ljansson)], [qw(-DNGX_HTTP_IMGBILL_NO_AVX2)]);
