// The client's timing logic with a fake clock: `now` is just a number the tests move.
// Run with `node --test browser/test/` (node 20's runner, no dependencies).
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const T = require('../../assets/session-timeout.js');

const SETTINGS = { warnBeforeMs: 20000, keepAliveIntervalMs: 2500 };
const IDLE_MS = 25000;

/** A status answer as the server sends it, for a session last seen at `lastSeen`. */
function status(serverNow, lastSeen, absoluteDeadline = null) {
  return {
    active: true,
    now_ms: serverNow,
    created_at_ms: 0,
    last_seen_ms: lastSeen,
    idle_deadline_ms: lastSeen + IDLE_MS,
    absolute_deadline_ms: absoluteDeadline,
  };
}

/** A page loaded at `t`, whose first status read took 100 ms (server clock equal). */
function loadedAt(t) {
  let state = T.initialState(t);
  assert.equal(T.decide(state, SETTINGS, t).action, 'sync');
  state = T.withRequest(state, t, false);
  return T.withStatus(state, t, t + 100, status(t + 50, t));
}

test('a new page reads the deadline first, once', () => {
  let state = T.initialState(1000);
  assert.deepEqual(T.decide(state, SETTINGS, 1000), { action: 'sync', wakeAt: null });
  state = T.withRequest(state, 1000, false);
  assert.deepEqual(T.decide(state, SETTINGS, 1001), { action: 'none', wakeAt: null });
});

test('the deadline is bracketed by the request, whatever the clocks skew', () => {
  // The server's clock is an hour ahead; only differences of its times matter.
  const hour = 3600000;
  let state = T.withRequest(T.initialState(0), 0, false);
  state = T.withStatus(state, 0, 200, status(hour + 100, hour + 100));
  assert.equal(state.deadline, IDLE_MS); // warn on the early side
  assert.equal(state.expireAt, 200 + IDLE_MS + T.GRACE_MS); // leave on the late side
  assert.equal(state.inFlight, false);
  assert.equal(state.extendable, true);
});

test('idle: no refresh, a warning warnBefore ahead, expiry after the deadline', () => {
  let state = loadedAt(0);
  // Last seen at 0 but read at server time 50, sent at 0: the deadline is taken as 24950.
  assert.equal(state.deadline, IDLE_MS - 50);
  const first = T.decide(state, SETTINGS, 100);
  assert.deepEqual(first, { action: 'none', wakeAt: 4950 });
  assert.equal(T.decide(state, SETTINGS, 4949).action, 'none');
  assert.equal(T.decide(state, SETTINGS, 4950).action, 'warn');
  state = Object.assign({}, state, { warning: true });
  assert.deepEqual(T.decide(state, SETTINGS, 6000), { action: 'none', wakeAt: state.expireAt });
  assert.equal(T.decide(state, SETTINGS, IDLE_MS).action, 'none'); // the server may still be active
  assert.equal(T.decide(state, SETTINGS, state.expireAt).action, 'expire');
});

test('activity refreshes at most once per interval, and only after activity', () => {
  let state = loadedAt(0);
  state = T.withActivity(state, 300);
  // Active, but the page load refreshed at 0: wait for the interval.
  assert.deepEqual(T.decide(state, SETTINGS, 300), { action: 'none', wakeAt: 2500 });
  assert.equal(T.decide(state, SETTINGS, 2500).action, 'refresh');
  state = T.withRequest(state, 2500, true);
  assert.equal(T.decide(state, SETTINGS, 2501).action, 'none');
  state = T.withStatus(state, 2550, 2600, status(2575, 2520));
  const warnAt = 2550 + (2520 + IDLE_MS - 2575) - 20000;
  // No activity since the refresh went out: nothing until the warning.
  assert.deepEqual(T.decide(state, SETTINGS, 3000), { action: 'none', wakeAt: warnAt });
  state = T.withActivity(state, 4000);
  assert.deepEqual(T.decide(state, SETTINGS, 4000), { action: 'none', wakeAt: 5000 });
  assert.equal(T.decide(state, SETTINGS, 5000).action, 'refresh');
});

test('a user active the whole time never sees the warning', () => {
  let state = loadedAt(0);
  let refreshes = 0;
  let lastRefreshAt = -Infinity;
  for (let now = 0; now <= 60000; now += 100) {
    state = T.withActivity(state, now);
    const next = T.decide(state, SETTINGS, now);
    assert.notEqual(next.action, 'warn', `warned at ${now}`);
    assert.notEqual(next.action, 'expire', `expired at ${now}`);
    if (next.action === 'refresh') {
      assert.ok(now - lastRefreshAt >= SETTINGS.keepAliveIntervalMs, `two refreshes within the interval at ${now}`);
      lastRefreshAt = now;
      refreshes += 1;
      state = T.withRequest(state, now, true);
      // The server answers 30 ms later, having refreshed at now + 10.
      state = T.withStatus(state, now + 20, now + 30, status(now + 25, now + 10));
    }
  }
  assert.equal(refreshes, 24); // every 2.5 s for 60 s
});

test('the warning ignores stray activity; "Stay signed in" refreshes at once and closes it', () => {
  let state = loadedAt(0);
  state = Object.assign({}, state, { warning: true });
  assert.equal(T.withActivity(state, 6000), state);
  state = T.withStay(state, 7000);
  assert.equal(state.warning, false);
  assert.equal(T.decide(state, SETTINGS, 7000).action, 'refresh');
  state = T.withRequest(state, 7000, true);
  // No new warning while the refresh is under way.
  assert.equal(T.decide(state, SETTINGS, 7010).action, 'none');
  state = T.withStatus(state, 7050, 7100, status(7075, 7060));
  assert.deepEqual(T.decide(state, SETTINGS, 7100), {
    action: 'none',
    wakeAt: 7050 + (7060 + IDLE_MS - 7075) - 20000,
  });
});

test('a deadline moved by another tab dismisses the warning', () => {
  let state = Object.assign({}, loadedAt(0), { warning: true });
  assert.equal(T.decide(state, SETTINGS, 6000).action, 'none');
  const shared = {
    deadline: 6000 + IDLE_MS,
    expireAt: 6100 + IDLE_MS + T.GRACE_MS,
    extendable: true,
    stamp: 6100,
    lastRefresh: 5990,
  };
  state = T.withShared(state, shared);
  assert.equal(state.deadline, shared.deadline);
  assert.equal(state.lastRefresh, 5990);
  assert.equal(T.decide(state, SETTINGS, 6200).action, 'dismiss');
  // An older message changes nothing.
  assert.equal(T.withShared(state, Object.assign({}, shared, { stamp: 10, deadline: 1 })), state);
});

test("another tab's refresh counts as this tab's: no second keep-alive", () => {
  let state = T.withActivity(loadedAt(0), 1000);
  state = T.withShared(state, { deadline: 1500 + IDLE_MS, expireAt: 1600 + IDLE_MS + T.GRACE_MS, extendable: true, stamp: 1600, lastRefresh: 1500 });
  // The activity at 1000 is older than the other tab's refresh at 1500.
  assert.deepEqual(T.decide(state, SETTINGS, 3000), { action: 'none', wakeAt: 1500 + IDLE_MS - 20000 });
});

test('an absolute deadline that binds is warned once and not extended', () => {
  let state = T.withRequest(T.initialState(0), 0, false);
  state = T.withStatus(state, 0, 0, status(0, 0, 22000));
  assert.equal(state.extendable, false);
  assert.equal(state.deadline, 22000);
  assert.equal(T.decide(state, SETTINGS, 2000).action, 'warn');
  state = T.withStay(Object.assign({}, state, { warning: true }), 3000);
  state = T.withRequest(state, 3000, true);
  state = T.withStatus(state, 3000, 3000, status(3000, 3000, 22000));
  assert.equal(T.decide(state, SETTINGS, 3001).action, 'none');
  assert.equal(T.decide(state, SETTINGS, 22000 + T.GRACE_MS).action, 'expire');
});

test('a failed status read is retried after a pause, not in a loop', () => {
  let state = T.withRequest(T.initialState(0), 0, false);
  state = T.withFailure(state, 500);
  assert.deepEqual(T.decide(state, SETTINGS, 600), { action: 'none', wakeAt: 500 + T.RETRY_MS });
  assert.equal(T.decide(state, SETTINGS, 500 + T.RETRY_MS).action, 'sync');
});

test('an ended page does nothing', () => {
  const state = Object.assign({}, loadedAt(0), { ended: true });
  assert.deepEqual(T.decide(state, SETTINGS, 1e9), { action: 'none', wakeAt: null });
});

test('time left reads as words', () => {
  assert.equal(T.secondsLeft(10500, 0), 11);
  assert.equal(T.secondsLeft(0, 10), 0);
  assert.equal(T.describeSeconds(0), '0 seconds');
  assert.equal(T.describeSeconds(1), '1 second');
  assert.equal(T.describeSeconds(45), '45 seconds');
  assert.equal(T.describeSeconds(60), '1 minute');
  assert.equal(T.describeSeconds(61), '1 minute 1 second');
  assert.equal(T.describeSeconds(125), '2 minutes 5 seconds');
});

test('the live region speaks at whole minutes, 30 and 10 seconds, not every second', () => {
  const spoken = [];
  let before = null;
  for (let s = 120; s >= 0; s--) {
    if (T.shouldAnnounce(before, s)) spoken.push(s);
    before = s;
  }
  assert.deepEqual(spoken, [60, 30, 10]);
  // A throttled timer that skips a mark still speaks once.
  assert.equal(T.shouldAnnounce(35, 25), true);
  assert.equal(T.shouldAnnounce(25, 25), false);
});
