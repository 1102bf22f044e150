#!/usr/bin/perl
# Dies mid-plan: only 2 of 4 planned tests run and the exit status is 255.
use strict;
use warnings;
use Test::More tests => 4;

ok(1, 'first');
ok(1, 'second');
die "lost the guest agent\n";
