/* tower-session-timeout: the browser client. Plain ES2017, no dependencies, no build step.
 *
 * The layer serves this file after a generated prelude that sets `sessionTimeoutSettings`;
 * the script then keeps the session alive while the user is active, warns before it expires
 * (WCAG 2.2 SC 2.2.1), and leaves the page when it does. Tabs of one app share what they
 * learn over a BroadcastChannel (or localStorage events where that is missing).
 *
 * The timing logic (`decide` and the `with*` state updates) is pure: it takes the time as an
 * argument, so node tests it with a fake clock. Everything touching the DOM is in `start`.
 */
(function (factory) {
  'use strict';
  var api = factory();
  if (typeof module === 'object' && module && module.exports) module.exports = api;
  if (typeof window !== 'undefined') {
    window.SessionTimeout = api;
    if (window.sessionTimeoutSettings) api.start(window.sessionTimeoutSettings);
  }
})(function () {
  'use strict';

  /** WCAG 2.2 SC 2.2.1: the user gets at least 20 seconds to extend. */
  var MIN_WARN_BEFORE_MS = 20000;
  /** Added after the latest moment the server's deadline can fall, before the page leaves:
   * leaving early would be a request that refreshes the session instead of ending it. */
  var GRACE_MS = 1000;
  /** How long to wait before asking the status route again after a network failure. */
  var RETRY_MS = 5000;

  // ---- Pure timing logic ------------------------------------------------------------------

  function initialState(now) {
    return {
      deadline: null, // local ms, the earliest the server's deadline can be
      expireAt: null, // local ms, past the latest the server's deadline can be
      extendable: true, // false when the absolute deadline binds: refreshing cannot help
      stamp: -Infinity, // when the deadline was learned, to keep the newest across tabs
      lastActivity: -Infinity,
      lastRefresh: now, // the page load itself refreshed the session
      inFlight: false,
      nextSyncAt: now,
      warning: false,
      dismissed: null, // a deadline the user acknowledged that cannot be extended
      ended: false
    };
  }

  function update(state, changes) {
    return Object.assign({}, state, changes);
  }

  /** The user did something. Ignored while the warning shows: only its explicit action
   * extends, so a stray mouse movement does not dismiss it unread. */
  function withActivity(state, now) {
    if (state.warning || state.ended) return state;
    return update(state, { lastActivity: now });
  }

  /** A request went out: a keep-alive (`refresh`) or a status read. */
  function withRequest(state, now, refresh) {
    return update(state, { inFlight: true, lastRefresh: refresh ? now : state.lastRefresh });
  }

  /** The status route answered. `sentAt`/`receivedAt` are local times around the request;
   * the server read its clock in between, so its deadline falls in
   * [sentAt + left, receivedAt + left] on the local clock, whatever the clocks' skew. */
  function withStatus(state, sentAt, receivedAt, status) {
    var idle = status.idle_deadline_ms;
    var absolute = status.absolute_deadline_ms;
    var serverDeadline = absolute == null ? idle : Math.min(idle, absolute);
    var left = serverDeadline - status.now_ms;
    return update(state, {
      inFlight: false,
      deadline: sentAt + left,
      expireAt: receivedAt + left + GRACE_MS,
      extendable: absolute == null || absolute > idle,
      stamp: receivedAt
    });
  }

  /** A request failed on the network; retry the status read later if it is still needed. */
  function withFailure(state, now) {
    return update(state, { inFlight: false, nextSyncAt: now + RETRY_MS });
  }

  /** Another tab learned a deadline; keep whichever is newer. */
  function withShared(state, message) {
    if (!(message.stamp > state.stamp)) return state;
    var lastRefresh =
      typeof message.lastRefresh === 'number'
        ? Math.max(state.lastRefresh, message.lastRefresh)
        : state.lastRefresh;
    return update(state, {
      deadline: message.deadline,
      expireAt: message.expireAt,
      extendable: message.extendable,
      stamp: message.stamp,
      lastRefresh: lastRefresh
    });
  }

  /** "Stay signed in": close the warning and refresh now, whatever the interval. */
  function withStay(state, now) {
    return update(state, {
      warning: false,
      lastActivity: now,
      lastRefresh: -Infinity,
      dismissed: state.extendable ? null : state.deadline
    });
  }

  function none(wakeAt) {
    return { action: 'none', wakeAt: isFinite(wakeAt) ? wakeAt : null };
  }

  /**
   * What to do at `now`: `sync` (read the status route), `refresh` (keep-alive), `warn`,
   * `dismiss` (close the warning), `expire` (leave the page), or `none`; and `wakeAt`, when
   * to ask again if nothing else happens (null: only on an event).
   */
  function decide(state, settings, now) {
    if (state.ended) return none(null);
    if (state.deadline === null) {
      if (state.inFlight) return none(null);
      return now >= state.nextSyncAt ? { action: 'sync', wakeAt: null } : none(state.nextSyncAt);
    }
    if (now >= state.expireAt) return { action: 'expire', wakeAt: null };
    if (state.inFlight) return none(state.expireAt);
    var active = state.lastActivity > state.lastRefresh;
    var refreshAt = state.lastRefresh + settings.keepAliveIntervalMs;
    if (active && now >= refreshAt) return { action: 'refresh', wakeAt: null };
    var warnAt = state.deadline - settings.warnBeforeMs;
    if (now >= warnAt) {
      if (!state.warning && state.dismissed !== state.deadline) return { action: 'warn', wakeAt: null };
      return none(state.expireAt);
    }
    if (state.warning) return { action: 'dismiss', wakeAt: null };
    return none(Math.min(warnAt, active ? refreshAt : Infinity));
  }

  /** Whole seconds left until `deadline`, never negative. */
  function secondsLeft(deadline, now) {
    return Math.max(0, Math.ceil((deadline - now) / 1000));
  }

  /** "1 minute 5 seconds": words read better than "1:05" to a screen reader. */
  function describeSeconds(seconds) {
    var minutes = Math.floor(seconds / 60);
    var rest = seconds % 60;
    var parts = [];
    if (minutes > 0) parts.push(minutes + (minutes === 1 ? ' minute' : ' minutes'));
    if (rest > 0 || minutes === 0) parts.push(rest + (rest === 1 ? ' second' : ' seconds'));
    return parts.join(' ');
  }

  /** Whether the live region speaks on going from `before` to `now` seconds left: on each
   * whole minute, then at 30 and 10 seconds, so a screen reader is not flooded each second. */
  function shouldAnnounce(before, now) {
    if (before === null || now >= before) return false;
    for (var mark = now; mark < before; mark++) {
      if (mark > 0 && (mark % 60 === 0 || mark === 30 || mark === 10)) return true;
    }
    return false;
  }

  // ---- The page -----------------------------------------------------------------------------

  var ACTIVITY_EVENTS = ['mousemove', 'mousedown', 'pointerdown', 'keydown', 'wheel', 'scroll', 'touchstart', 'focus'];
  var REQUEST_TIMEOUT_MS = 10000;
  var running = null;

  function readSettings(raw) {
    var number = function (value, fallback) {
      return typeof value === 'number' && isFinite(value) && value > 0 ? value : fallback;
    };
    return {
      keepAlivePath: String(raw.keepAlivePath),
      statusPath: String(raw.statusPath),
      loginUrl: typeof raw.loginUrl === 'string' ? raw.loginUrl : null,
      warnBeforeMs: Math.max(MIN_WARN_BEFORE_MS, number(raw.warnBeforeMs, 60000)),
      keepAliveIntervalMs: number(raw.keepAliveIntervalMs, 60000),
      channel: typeof raw.channel === 'string' ? raw.channel : 'tower-session-timeout'
    };
  }

  /** Messages to the other tabs of this app: BroadcastChannel, else localStorage events. */
  function openChannel(name, onMessage) {
    if (typeof BroadcastChannel === 'function') {
      var channel = new BroadcastChannel(name);
      channel.onmessage = function (event) { onMessage(event.data); };
      return function (message) { channel.postMessage(message); };
    }
    window.addEventListener('storage', function (event) {
      if (event.key !== name || !event.newValue) return;
      try { onMessage(JSON.parse(event.newValue)); } catch (error) { /* not ours */ }
    });
    return function (message) {
      try {
        // The nonce makes each message a change, so the event fires for repeats too.
        localStorage.setItem(name, JSON.stringify(Object.assign({ nonce: Math.random() }, message)));
      } catch (error) { /* storage disabled: tabs just do not share */ }
    };
  }

  function request(path) {
    var controller = typeof AbortController === 'function' ? new AbortController() : null;
    var timer = controller && setTimeout(function () { controller.abort(); }, REQUEST_TIMEOUT_MS);
    return fetch(path, {
      credentials: 'same-origin',
      cache: 'no-store',
      headers: { Accept: 'application/json' },
      signal: controller ? controller.signal : undefined
    }).then(
      function (response) { clearTimeout(timer); return response; },
      function (error) { clearTimeout(timer); throw error; }
    );
  }

  var HIDDEN = 'position:absolute;width:1px;height:1px;margin:-1px;padding:0;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap;border:0';

  /** The warning: an alert dialog with one action, styled inline so it fits any page. */
  function createDialog(onStay) {
    var doc = document;
    var overlay = doc.createElement('div');
    overlay.setAttribute('data-session-timeout', '');
    overlay.style.cssText = 'position:fixed;top:0;right:0;bottom:0;left:0;z-index:2147483647;display:flex;align-items:center;justify-content:center;background:rgba(0,0,0,.55);font:16px/1.5 system-ui,sans-serif';
    var box = doc.createElement('div');
    box.setAttribute('role', 'alertdialog');
    box.setAttribute('aria-modal', 'true');
    box.setAttribute('aria-labelledby', 'session-timeout-title');
    box.setAttribute('aria-describedby', 'session-timeout-text');
    box.style.cssText = 'max-width:26rem;margin:1rem;padding:1.5rem;background:#fff;color:#111;border-radius:.5rem;box-shadow:0 .5rem 2rem rgba(0,0,0,.4)';
    var title = doc.createElement('h2');
    title.id = 'session-timeout-title';
    title.style.cssText = 'margin:0 0 .75rem;font-size:1.25rem';
    title.textContent = 'Your session is about to expire';
    var text = doc.createElement('p');
    text.id = 'session-timeout-text';
    text.style.cssText = 'margin:0 0 1.25rem';
    var time = doc.createElement('strong');
    var button = doc.createElement('button');
    button.type = 'button';
    button.textContent = 'Stay signed in';
    button.style.cssText = 'font:inherit;font-weight:600;padding:.5rem 1.25rem;border:2px solid #0b57d0;border-radius:.375rem;background:#0b57d0;color:#fff;cursor:pointer;outline-offset:3px';
    var live = doc.createElement('div');
    live.setAttribute('aria-live', 'assertive');
    live.setAttribute('aria-atomic', 'true');
    live.style.cssText = HIDDEN;
    box.appendChild(title);
    box.appendChild(text);
    box.appendChild(button);
    overlay.appendChild(box);
    overlay.appendChild(live);

    var returnFocus = null;
    var spoken = null;
    button.addEventListener('click', onStay);
    var onKey = function (event) {
      if (event.key === 'Escape') {
        event.preventDefault();
        onStay();
      } else if (event.key === 'Tab') {
        // The one control keeps focus while the dialog is modal.
        event.preventDefault();
        button.focus();
      }
    };

    return {
      open: function (seconds, extendable) {
        if (overlay.parentNode) return;
        spoken = null;
        this.update(seconds, extendable);
        returnFocus = doc.activeElement;
        doc.body.appendChild(overlay);
        doc.addEventListener('keydown', onKey, true);
        button.focus();
      },
      update: function (seconds, extendable) {
        var words = describeSeconds(seconds);
        var sentence = extendable
          ? 'You will be signed out in ' + words + ' because there has been no activity.'
          : 'Your session reaches its time limit in ' + words + '. Save your work.';
        text.textContent = '';
        text.appendChild(doc.createTextNode(sentence.slice(0, sentence.indexOf(words))));
        time.textContent = words;
        text.appendChild(time);
        text.appendChild(doc.createTextNode(sentence.slice(sentence.indexOf(words) + words.length)));
        button.textContent = extendable ? 'Stay signed in' : 'OK';
        if (shouldAnnounce(spoken, seconds)) live.textContent = words + ' left before you are signed out.';
        spoken = seconds;
      },
      close: function () {
        if (!overlay.parentNode) return;
        doc.removeEventListener('keydown', onKey, true);
        overlay.parentNode.removeChild(overlay);
        live.textContent = '';
        if (returnFocus && typeof returnFocus.focus === 'function') returnFocus.focus();
      }
    };
  }

  /** Starts the client on this page with the settings the layer generated. */
  function start(raw) {
    if (running) return running;
    var settings = readSettings(raw || {});
    var state = initialState(Date.now());
    var timer = null;
    var dialog = null;

    var send = openChannel(settings.channel, function (message) {
      if (!message || state.ended) return;
      if (message.type === 'deadline') {
        state = withShared(state, message);
        tick();
      } else if (message.type === 'ended') {
        leave(message.reason, false);
      }
    });

    function share() {
      send({
        type: 'deadline',
        deadline: state.deadline,
        expireAt: state.expireAt,
        extendable: state.extendable,
        stamp: state.stamp,
        lastRefresh: isFinite(state.lastRefresh) ? state.lastRefresh : null
      });
    }

    /** Leaves the page: to the current URL, where the server answers 440, after expiry; to
     * the login URL when the session ended otherwise (sign-out, or the server said so). */
    function leave(reason, tellOthers) {
      if (state.ended) return;
      state = update(state, { ended: true });
      clearTimeout(timer);
      if (dialog) dialog.close();
      if (tellOthers) send({ type: 'ended', reason: reason });
      if (reason === 'signedOut' && tellOthers) return; // this page is already on its way out
      if (reason !== 'expired' && settings.loginUrl) window.location.assign(settings.loginUrl);
      else window.location.replace(window.location.href);
    }

    function readStatus(sentAt) {
      return request(settings.statusPath).then(function (response) {
        if (response.status === 440) return leave('ended', true);
        if (!response.ok) throw new Error('status route answered ' + response.status);
        return response.json().then(function (status) {
          state = withStatus(state, sentAt, Date.now(), status);
          share();
        });
      });
    }

    function failed() {
      state = withFailure(state, Date.now());
    }

    function sync() {
      var now = Date.now();
      state = withRequest(state, now, false);
      readStatus(now).catch(failed).then(tick);
    }

    function refresh() {
      state = withRequest(state, Date.now(), true);
      request(settings.keepAlivePath)
        .then(function (response) {
          if (response.status === 440) return leave('ended', true);
          if (!response.ok) throw new Error('keep-alive route answered ' + response.status);
          return readStatus(Date.now());
        })
        .catch(failed)
        .then(tick);
    }

    function stay() {
      state = withStay(state, Date.now());
      if (dialog) dialog.close();
      tick();
    }

    function tick() {
      clearTimeout(timer);
      if (state.ended) return;
      var now = Date.now();
      var next = decide(state, settings, now);
      // Each action changes the state so that the next decision differs; a few rounds settle.
      for (var round = 0; round < 4 && next.action !== 'none'; round++) {
        if (next.action === 'expire') return leave('expired', true);
        if (next.action === 'sync') sync();
        else if (next.action === 'refresh') refresh();
        else if (next.action === 'warn') {
          state = update(state, { warning: true });
          dialog = dialog || createDialog(stay);
          dialog.open(secondsLeft(state.deadline, now), state.extendable);
        } else if (next.action === 'dismiss') {
          state = update(state, { warning: false });
          if (dialog) dialog.close();
        }
        next = decide(state, settings, now);
      }
      var wakeAt = next.wakeAt;
      if (state.warning) {
        dialog.update(secondsLeft(state.deadline, now), state.extendable);
        // The visible countdown changes when the whole seconds left do.
        var sinceTick = (state.deadline - now) % 1000;
        wakeAt = Math.min(wakeAt === null ? Infinity : wakeAt, now + (sinceTick > 0 ? sinceTick : 1000));
      }
      if (wakeAt !== null && isFinite(wakeAt)) {
        // Timers cannot wait longer than 2^31-1 ms; waking early only decides again.
        timer = setTimeout(tick, Math.min(Math.max(0, wakeAt - now), 2147483647));
      }
    }

    function onActivity(event) {
      // Focus moved by a script (the dialog returning focus) is not the user; the window
      // gaining focus is.
      if (event && event.type === 'focus' && event.target !== window) return;
      var wasIdle = !(state.lastActivity > state.lastRefresh);
      state = withActivity(state, Date.now());
      // Only the first activity after a refresh can change the decision.
      if (wasIdle) tick();
    }

    ACTIVITY_EVENTS.forEach(function (name) {
      window.addEventListener(name, onActivity, { capture: true, passive: true });
    });
    document.addEventListener('visibilitychange', function () {
      if (document.visibilityState === 'visible') {
        onActivity();
        tick(); // timers are throttled in hidden tabs
      }
    });
    window.addEventListener('pageshow', function (event) {
      // Restored from the back/forward cache: what this page knew is stale.
      if (event.persisted) {
        state = initialState(Date.now());
        tick();
      }
    });
    // Sign-out reaches the other tabs: a form marked `data-session-signout` on submit, any
    // other marked element (a link, a button outside such a form) on click.
    document.addEventListener('submit', function (event) {
      if (event.target.hasAttribute && event.target.hasAttribute('data-session-signout')) signedOut();
    }, true);
    document.addEventListener('click', function (event) {
      var marked = event.target.closest && event.target.closest('[data-session-signout]');
      if (marked && marked.tagName !== 'FORM') signedOut();
    }, true);

    function signedOut() {
      leave('signedOut', true);
    }

    tick();
    running = {
      signedOut: signedOut,
      stop: function () {
        state = update(state, { ended: true });
        clearTimeout(timer);
        if (dialog) dialog.close();
      }
    };
    return running;
  }

  return {
    MIN_WARN_BEFORE_MS: MIN_WARN_BEFORE_MS,
    GRACE_MS: GRACE_MS,
    RETRY_MS: RETRY_MS,
    initialState: initialState,
    withActivity: withActivity,
    withRequest: withRequest,
    withStatus: withStatus,
    withFailure: withFailure,
    withShared: withShared,
    withStay: withStay,
    decide: decide,
    secondsLeft: secondsLeft,
    describeSeconds: describeSeconds,
    shouldAnnounce: shouldAnnounce,
    start: start,
    /** Tells the other tabs the user signed out, and stops this page's timers. Elements
     * marked `data-session-signout` call it on click or submit. */
    signedOut: function () {
      if (running) running.signedOut();
    }
  };
});
