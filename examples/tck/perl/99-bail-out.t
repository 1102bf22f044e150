#!/usr/bin/perl
# Bail out: the platform is unusable, nothing after this is meaningful.
use strict;
use warnings;
use Test::More tests => 3;

ok(1, 'open connection');
BAIL_OUT('hypervisor connection lost');
ok(1, 'never reached');
