#!/usr/bin/perl
# Everything passes: the baseline a platform must meet.
use strict;
use warnings;
use Test::More tests => 3;

ok(1, 'connect to the platform');
is(1 + 1, 2, 'arithmetic works');
like('test:///default', qr/^test:/, 'platform URI has a scheme');
