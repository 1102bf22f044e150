#!/usr/bin/perl
# Needs a resource from kit.toml; skips itself when the kit lacks it.
use strict;
use warnings;
use Test::More;

my $server = $ENV{TESTBED_TCK_RESOURCE_ISCSI_SERVER};
plan skip_all => 'no iscsi-server configured' unless $server;
plan tests => 1;
ok(1, "log in to $server");
