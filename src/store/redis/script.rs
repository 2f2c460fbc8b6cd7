//! The one Lua script behind every [`RedisStore`](super::RedisStore) call, and the record it
//! keeps.
//!
//! Each call runs it once on one key, so reading, judging against `now` and writing is one
//! atomic step on the server: two instances racing on one session see one order of events,
//! and an expired session stays expired. It touches only `KEYS[1]`, so on Redis Cluster it
//! runs on the master of that key's slot. The operations that revoke a session also publish it
//! for the near caches (`push.rs`): a channel is not a key, and on a Cluster Redis carries the
//! message to every node.
//!
//! # Session record (one hash per session key)
//!
//! - Active: `c` (created_at) and `l` (last_seen); with timeouts of its own `i` (idle ms) and
//!   `a` (absolute ms, -1 for none); with an owner, `p` (the principal as the app gave it), `q`
//!   (its score in the owner's index when it began, which orders concurrent sign-ins) and `x`
//!   (until when the owner's index is sure to be kept: the session's deadline never passes it).
//! - Tombstone: `r` (reason) and `u` (until), and `p` if the session had an owner; once a
//!   sweep claimed its end to announce it, `n` (until when the claim holds), and once the end
//!   was announced, `h`.
//! - Forgotten, of an owned session: `g` alone, kept for the sign-in grace. It answers every
//!   call as a missing key would, but tells a reader of the owner's index that the session is
//!   over, so an index member whose key is missing can be taken for a sign-in under way.
//!
//! All times are unix milliseconds of the app's clock; Redis's own clock only runs the keys'
//! TTLs, which are relative and so act as garbage collection whatever the app's clock says.
//! Keys of owned sessions live the sign-in grace beyond their horizon, for the same reason as
//! `g`.
//!
//! # Owner index (one sorted set per owner)
//!
//! The `index_*` operations work on an owner's index instead: members are session keys (hex),
//! scores the app-clock milliseconds of the sign-in, made strictly increasing per index (a
//! sign-in takes `max(now, highest score + 1)`), so that they also say in which order sign-ins
//! reached the index. Its TTL is only ever lengthened, and always outlasts the `x` of every
//! session it lists by the grace.
//!
//! # Due index (sorted sets, one slot each)
//!
//! The `due_*` operations work on a shard of the due index (see `due.rs`): members are
//! session keys (hex), scores the app-clock milliseconds from which a sweep should look at the
//! session. `due_add` lists a member unless it is listed earlier, first dropping what no sweep
//! visited within the grace; `due_take` returns the members due and moves them to the end of
//! the sweep's lease; `due_settle` moves or drops the members a sweep took, only where the take
//! left them; `due_drop` drops acknowledged ends. The session operations `claim` and `ack`
//! decide, on the session's own key, what a sweep hands out and what is announced.
//!
//! # The index's lease
//!
//! A session's `x` is its absolute deadline, or, without one, its idle deadline plus
//! [`OWNER_INDEX_LEASE`](super::RedisStore::OWNER_INDEX_LEASE) (an hour). A refreshing check
//! that finds `x` less than half a lease beyond what the session now needs answers `renew`
//! beside the record: the store then lengthens the index's TTL and only then raises `x`
//! (`raise`), so the index never ends before a session it lists. Until then, or if that
//! fails, the session ends at `x` at the latest, as an absolute timeout would end it.

use std::sync::LazyLock;

use redis::Script;

/// The script's text.
pub(super) const LUA: &str = r#"
local key = KEYS[1]
local op = ARGV[1]
local now = tonumber(ARGV[2])

-- Whole numbers as digits: tostring would switch to exponents past 14 digits.
local function int(n)
  return string.format('%.0f', n)
end

if string.sub(op, 1, 6) == 'index_' then
  local kind = redis.call('TYPE', key)['ok']
  if kind ~= 'zset' and kind ~= 'none' then
    return {'corrupt', 'a ' .. kind .. ' where an owner index was expected'}
  end
  -- At least `ttl` ms from now: a new key gets it, a TTL is never shortened.
  local function lease(before, ttl)
    if before == -2 or before == -1 or before < ttl then
      redis.call('PEXPIRE', key, int(ttl))
    end
  end
  if op == 'index_add' then
    local member, ttl = ARGV[3], tonumber(ARGV[4])
    local top = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
    local score = now
    if top[2] then
      score = math.max(now, tonumber(top[2]) + 1)
    end
    local before = redis.call('PTTL', key)
    redis.call('ZADD', key, int(score), member)
    lease(before, ttl)
    return {'added', int(score)}
  elseif op == 'index_keep' then
    local member, score, ttl = ARGV[3], ARGV[4], tonumber(ARGV[5])
    local before = redis.call('PTTL', key)
    redis.call('ZADD', key, 'NX', score, member)
    lease(before, ttl)
    return {'kept'}
  elseif op == 'index_list' then
    return redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
  elseif op == 'index_prune' then
    -- Only members still at the score the reader saw: one that a sign-in added again since
    -- (a new score) stays.
    local removed = 0
    for n = 3, #ARGV - 1, 2 do
      local score = redis.call('ZSCORE', key, ARGV[n])
      if score and tonumber(score) == tonumber(ARGV[n + 1]) then
        removed = removed + redis.call('ZREM', key, ARGV[n])
      end
    end
    return {'pruned', int(removed)}
  end
  return redis.error_reply('unknown index operation')
end

if string.sub(op, 1, 4) == 'due_' then
  local kind = redis.call('TYPE', key)['ok']
  if kind ~= 'zset' and kind ~= 'none' then
    return {'corrupt', 'a ' .. kind .. ' where a due index was expected'}
  end
  -- At least `ttl` ms from now, on a key that exists; a TTL is never shortened.
  local function keep(ttl)
    local before = redis.call('PTTL', key)
    if before == -1 or (before >= 0 and before < ttl) then
      redis.call('PEXPIRE', key, int(ttl))
    end
  end
  if op == 'due_add' then
    local member, score = ARGV[3], tonumber(ARGV[4])
    -- What no sweep visited within the grace after it came due: nobody announces here.
    redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. ARGV[5])
    local before = redis.call('ZSCORE', key, member)
    -- An earlier listing stays: the sweep looks then, and sees what is due.
    if not before or tonumber(before) > score then
      redis.call('ZADD', key, int(score), member)
    end
    keep(tonumber(ARGV[6]))
    return {'added'}
  elseif op == 'due_take' then
    -- Moved to the lease's end at once, so another sweep takes other members meanwhile and
    -- these come due again if this one dies before it settles them.
    local due = redis.call('ZRANGEBYSCORE', key, '-inf', int(now), 'LIMIT', 0, ARGV[4])
    for _, member in ipairs(due) do
      redis.call('ZADD', key, ARGV[3], member)
    end
    keep(tonumber(ARGV[5]))
    return due
  elseif op == 'due_settle' then
    -- Only members still where the take put them: one that an end or a begin listed earlier
    -- since stays where that put it.
    local taken = tonumber(ARGV[3])
    local settled = 0
    for n = 5, #ARGV - 1, 2 do
      local score = redis.call('ZSCORE', key, ARGV[n])
      if score and tonumber(score) == taken then
        if ARGV[n + 1] == '-' then
          redis.call('ZREM', key, ARGV[n])
        else
          redis.call('ZADD', key, ARGV[n + 1], ARGV[n])
        end
        settled = settled + 1
      end
    end
    keep(tonumber(ARGV[4]))
    return {'settled', int(settled)}
  elseif op == 'due_drop' then
    for n = 3, #ARGV do
      redis.call('ZREM', key, ARGV[n])
    end
    return {'dropped'}
  end
  return redis.error_reply('unknown due index operation')
end

local idle = tonumber(ARGV[3])
local absolute = tonumber(ARGV[4])
local touch = tonumber(ARGV[5])
local retention = tonumber(ARGV[6])
local refresh = ARGV[7] == '1'
local grace = tonumber(ARGV[8])
local lease = tonumber(ARGV[9])

local function idle_of(rec)
  if rec.i then
    return rec.i
  end
  return idle
end

local function absolute_of(rec)
  if rec.i then
    return rec.a
  end
  return absolute
end

-- The first deadline by the timeouts alone, and its reason; absolute wins a tie, as
-- activity cannot move it. The record's own timeouts replace the layer's.
local function natural(rec)
  local idle_at = rec.l + idle_of(rec)
  if absolute_of(rec) >= 0 then
    local absolute_at = rec.c + absolute_of(rec)
    if absolute_at <= idle_at then
      return absolute_at, 'absolute'
    end
  end
  return idle_at, 'idle'
end

-- The deadline, which never passes `x` (until when the owner's index is sure to be kept).
local function deadline(rec)
  local at, reason = natural(rec)
  if rec.x and rec.x < at then
    if absolute_of(rec) >= 0 then
      reason = 'absolute'
    end
    return rec.x, reason
  end
  return at, reason
end

-- For an owned session whose `x` falls short of what it now needs by more than half a lease:
-- the `x` to ask for (its absolute deadline, or its idle deadline from now plus a lease).
local function renewal(rec)
  if not rec.p then
    return nil
  end
  local wanted = now + idle_of(rec) + lease
  if absolute_of(rec) >= 0 then
    wanted = math.min(wanted, rec.c + absolute_of(rec))
  end
  if rec.x < natural(rec) or rec.x < wanted - lease / 2 then
    return wanted
  end
  return nil
end

-- A key that ends at `ends` (app time); an owned session's key lives the grace longer.
local function expire(owner, ends)
  local ttl = ends - now
  if owner then
    ttl = ttl + grace
  end
  redis.call('PEXPIRE', key, int(ttl))
end

-- Forgotten: as if never known. An owned session leaves `g` for the grace.
local function forget(owner)
  redis.call('DEL', key)
  if owner then
    redis.call('HSET', key, 'g', '1')
    redis.call('PEXPIRE', key, int(grace))
  end
end

-- A tombstone lives until `ends`; one already past it is not worth writing.
local function retire(owner, reason, ends)
  if ends > now then
    redis.call('DEL', key)
    if owner then
      redis.call('HSET', key, 'r', reason, 'u', int(ends), 'p', owner)
    else
      redis.call('HSET', key, 'r', reason, 'u', int(ends))
    end
    expire(owner, ends)
  else
    forget(owner)
  end
end

-- Tells every instance's near cache that the session changed, in the step that changed it,
-- so that no change goes unpushed. The revoking operations take the channel as their last
-- argument. A publish Redis refuses (an ACL without PUBLISH) leaves the change standing; the
-- reply then ends with 'unpublished', for the store to log.
local function revoke(reply)
  local published = redis.pcall('PUBLISH', ARGV[#ARGV], string.sub(key, -64))
  if type(published) == 'table' and published.err then
    reply[#reply + 1] = 'unpublished'
  end
  return reply
end

-- Writes an active record (after clearing the key when `fresh`), with its TTL.
local function write(rec, fresh)
  if fresh then
    redis.call('DEL', key)
  end
  local at = deadline(rec)
  local args = {'HSET', key, 'c', int(rec.c), 'l', int(rec.l)}
  if rec.i then
    table.insert(args, 'i')
    table.insert(args, int(rec.i))
    table.insert(args, 'a')
    table.insert(args, int(rec.a))
  end
  if rec.p then
    table.insert(args, 'p')
    table.insert(args, rec.p)
    table.insert(args, 'q')
    table.insert(args, int(rec.q))
    table.insert(args, 'x')
    table.insert(args, int(rec.x))
  end
  redis.call(unpack(args))
  expire(rec.p, at + retention)
end

local function with_timeouts(reply, rec)
  if rec.i then
    table.insert(reply, int(rec.i))
    table.insert(reply, int(rec.a))
  end
  return reply
end

local rec, state, why, gone
-- A tombstone's end: until when it is remembered, its owner, whether it was announced, and
-- until when a sweep has it claimed.
local ends_at, owned, heard, claimed
local kind = redis.call('TYPE', key)['ok']
if kind == 'hash' then
  local f = redis.call('HMGET', key, 'c', 'l', 'r', 'u', 'i', 'a', 'p', 'q', 'x', 'g', 'h', 'n')
  local c, l, r, u = tonumber(f[1]), tonumber(f[2]), f[3], tonumber(f[4])
  local i, a, q, x = tonumber(f[5]), tonumber(f[6]), tonumber(f[8]), tonumber(f[9])
  local owner = f[7] or nil
  local n = tonumber(f[12])
  if c and l and not r and not f[4] and not f[10] and not f[11] and not f[12]
      and (f[5] == false) == (i == nil) and (f[6] == false) == (a == nil)
      and (i == nil) == (a == nil)
      and (owner == nil) == (q == nil) and (owner == nil) == (x == nil)
      and (f[8] == false) == (q == nil) and (f[9] == false) == (x == nil) then
    rec = {c = c, l = l, i = i, a = a, p = owner, q = q, x = x}
    state = 'active'
  elseif (r == 'idle' or r == 'absolute' or r == 'ended' or r == 'superseded') and u
      and not f[1] and not f[2] and not f[10] and (f[12] == false) == (n == nil) then
    if u > now then
      state, why = 'tombstone', r
      ends_at, owned, heard, claimed = u, owner, f[11] ~= false, n
    else
      -- Past its retention by the app's clock: forgotten, as if never known.
      forget(owner)
      gone = owner ~= nil
    end
  elseif f[10] and not f[1] and not f[2] and not r then
    gone = true
  else
    return {'corrupt', 'unexpected fields in the session hash'}
  end
elseif kind ~= 'none' then
  return {'corrupt', 'a ' .. kind .. ' where a session hash was expected'}
end

if op == 'check' then
  if state == nil then
    return {'expired', 'unknown'}
  elseif state == 'tombstone' then
    return {'expired', why}
  end
  local at, reason = deadline(rec)
  if now >= at + retention then
    -- Never asked about until its retention passed: forgotten, as a purge would have.
    forget(rec.p)
    return {'expired', 'unknown'}
  elseif now >= at then
    retire(rec.p, reason, at + retention)
    return {'retired', reason}
  end
  if refresh then
    -- No skipped write when the session's own idle timeout is not longer than the interval.
    local interval = touch
    if interval >= idle_of(rec) then
      interval = -1
    end
    local needs
    if interval >= 0 then
      needs = math.max(now - rec.l, 0) >= interval
    else
      needs = now > rec.l
    end
    if needs then
      rec.l = math.max(rec.l, now)
      write(rec, false)
      local wanted = renewal(rec)
      if wanted then
        return with_timeouts({'renew', rec.p, int(rec.q), int(wanted), int(rec.c), int(rec.l)}, rec)
      end
    end
  end
  return with_timeouts({'active', int(rec.c), int(rec.l)}, rec)
elseif op == 'begin' then
  local owner = ARGV[10]
  if state == 'tombstone' then
    return {'refused', why}
  elseif state == 'active' then
    local at, reason = deadline(rec)
    if now < at then
      if (rec.p or '') == owner then
        return {'already', '1'}
      end
      return {'already', '0'}
    elseif now < at + retention then
      retire(rec.p, reason, at + retention)
      return {'refused', reason}
    end
    -- Forgotten: begins anew below, as after a purge.
  end
  local new = {c = now, l = now}
  local own_idle = tonumber(ARGV[11])
  if own_idle >= 0 then
    new.i, new.a = own_idle, tonumber(ARGV[12])
  end
  if owner ~= '' then
    new.p, new.q, new.x = owner, tonumber(ARGV[13]), tonumber(ARGV[14])
  end
  write(new, true)
  return {'began'}
elseif op == 'end' then
  -- ARGV[11]: the owner whose index listed the key, or '' for the layer's own end.
  local reason, owner = ARGV[10], ARGV[11]
  if state ~= 'active' then
    return {'kept'}
  elseif owner ~= '' and rec.p ~= owner then
    return {'other'}
  end
  local at, expired = deadline(rec)
  if now >= at then
    retire(rec.p, expired, at + retention)
    return {'kept'}
  end
  retire(rec.p, reason, now + retention)
  return revoke({'ended'})
elseif op == 'peek' then
  -- Read by an owner's index: active only if this owner's, and never written to.
  if state == nil then
    if gone then
      return {'dead'}
    end
    return {'none'}
  elseif state == 'tombstone' then
    return {'dead'}
  elseif rec.p ~= ARGV[10] then
    return {'other'}
  elseif now >= deadline(rec) then
    -- Not retired yet: a clock stepping back would find it active, so it stays listed.
    return {'expired'}
  end
  return with_timeouts({'active', int(rec.q), int(rec.c), int(rec.l)}, rec)
elseif op == 'owner' then
  if state == 'active' and rec.p and now < deadline(rec) then
    return {'owner', rec.p}
  end
  return {'none'}
elseif op == 'raise' then
  -- After the owner's index was kept longer: the session may live that much longer.
  if state == 'active' and rec.p == ARGV[10] and rec.q == tonumber(ARGV[11])
      and now < deadline(rec) then
    -- Only while active at `now`: like a refresh, it never brings back a retired session.
    rec.x = math.max(rec.x, tonumber(ARGV[12]))
    write(rec, false)
    return {'raised'}
  end
  return {'kept'}
elseif op == 'withdraw' then
  -- A sign-in beyond a refusing limit takes back the session it began.
  if state == 'active' and rec.p == ARGV[10] and rec.q == tonumber(ARGV[11]) then
    forget(rec.p)
    return revoke({'withdrawn'})
  end
  return {'kept'}
elseif op == 'set' then
  if state ~= 'active' then
    return {'kept'}
  end
  local at, reason = deadline(rec)
  if now >= at + retention then
    forget(rec.p)
    return {'kept'}
  elseif now >= at then
    retire(rec.p, reason, at + retention)
    return {'kept'}
  end
  -- ARGV[12]: until when the caller has since had the owner's index kept (-1: not yet).
  local covered = tonumber(ARGV[12])
  rec.i, rec.a = tonumber(ARGV[10]), tonumber(ARGV[11])
  local wanted = renewal(rec)
  if wanted then
    if covered < wanted then
      return {'cover', rec.p, int(rec.q), int(wanted)}
    end
    rec.x = math.max(rec.x, covered)
  end
  local new_at, new_reason = deadline(rec)
  if now >= new_at then
    retire(rec.p, new_reason, new_at + retention)
  else
    write(rec, true)
  end
  return revoke({'changed'})
elseif op == 'claim' then
  -- A sweep asks for the end, to announce it; ARGV[10]: until when it is then claimed. Only
  -- one sweep at a time gets it: the claim is written here, in the step that reads it.
  local lease_end = ARGV[10]
  if state == nil then
    return {'gone'}
  elseif state == 'active' then
    local at, reason = deadline(rec)
    if now < at then
      return {'later', int(at)}
    elseif now >= at + retention then
      forget(rec.p)
      return {'gone'}
    end
    -- Retired as a check would retire it, and claimed in the same step.
    retire(rec.p, reason, at + retention)
    redis.call('HSET', key, 'n', lease_end)
    return {'end', reason, int(at), rec.p}
  elseif heard then
    return {'done'}
  elseif claimed and claimed > now then
    return {'claimed', int(claimed)}
  end
  redis.call('HSET', key, 'n', lease_end)
  return {'end', why, int(ends_at - retention), owned}
elseif op == 'ack' then
  -- The end was announced: no sweep hands it out again.
  if state ~= 'tombstone' then
    return {'kept'}
  elseif not heard then
    redis.call('HSET', key, 'h', '1')
  end
  return {'acked'}
end
return redis.error_reply('unknown session operation')
"#;

/// Loaded on every master when the store connects (`SCRIPT LOAD`, which the cluster client
/// sends to every master) and then called by its SHA-1 (`EVALSHA`). A node that does not have
/// it (restarted, `SCRIPT FLUSH`, or a replica just promoted: Redis does not replicate its
/// script cache) answers `NOSCRIPT`, and the call is sent again as `EVAL` with the whole
/// script, which that node then keeps. `EVAL` goes to the key's node alone, so a missing
/// script never depends on another master being up.
pub(super) static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(LUA));
