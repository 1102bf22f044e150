#!/usr/bin/perl
# Subtests: the parent point carries the verdict; a failing child fails it.
use strict;
use warnings;
use Test::More tests => 2;

subtest 'storage pool lifecycle' => sub {
    plan tests => 2;
    ok(1, 'create pool');
    ok(1, 'destroy pool');
};
subtest 'volume upload' => sub {
    ok(1, 'create volume');
    ok(0, 'upload data');
    done_testing();
};
