// Run by run-node.sh through Node's built-in runner with the TAP reporter.
import test from 'node:test';
import assert from 'node:assert';

test('adds', () => {
  assert.strictEqual(1 + 1, 2);
});

test('compares states', () => {
  assert.strictEqual('running', 'shutoff');
});

test('skipped', { skip: 'no hardware' }, () => {});

test('todo', { todo: 'not yet' }, () => {
  assert.ok(false);
});

test('group', async (t) => {
  await t.test('inner one', () => {});
  await t.test('inner two', () => {});
});
