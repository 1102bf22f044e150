#!/usr/bin/perl
# The harness hands the kit configuration to every script.
use strict;
use warnings;
use Test::More tests => 2;

ok(defined $ENV{TESTBED_TCK_PLATFORM}, 'platform is set')
    or diag('TESTBED_TCK_PLATFORM missing');
ok(!defined $ENV{TESTBED_TCK_CONFIG} || -f $ENV{TESTBED_TCK_CONFIG}, 'config file exists');
