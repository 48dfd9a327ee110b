#!/usr/bin/perl
# The request side, checked directly in C (t/unit/request_check.c) under
# AddressSanitizer and UBSan: the validator's verdicts for both APIs and
# OpenAI's stream flags, Gemini's model and method from the URL, and a
# ?key= kept from the upstream and the logs.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Imgbill::Unit;

Imgbill::Unit::run('request_check',
                   [qw(compact compact_token request reading key api splice openai
                       gemini images ideogram ideogram_legacy scan scan_token form
                       multipart)],
                   [qw(-ljansson -lcrypto)]);
