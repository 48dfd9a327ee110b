-- imgbill's one Redis script: admit, settle, release, release_key,
-- lookup and info, and a loop that runs a batch of them in one call.
--
-- scripts/gen-script turns this file into ngx_http_imgbill_script_lua.h
-- (the text and its SHA-1, for EVALSHA); t/03-script.t checks that the
-- header is current and runs every function here against redis-server
-- on its own.
--
-- A call's ARGV holds, per command, the function's number (see `run` at
-- the end), how many KEYS and how many ARGV it takes, then those
-- arguments; its KEYS are every command's keys, in the same order.
-- Commands of several accounts share a call, which is why imgbill needs
-- a standalone Redis (or a proxy that keeps a connection's calls on one
-- node).
--
-- Holds: the hash imgbill:{acct}:holds (request id -> "units:expiry",
-- what operators read) and, beside it, the hash imgbill:{acct}:held:
-- "units", the sum of the holds, and "sweep", a time before which no
-- hold can have expired.  An admission reads the sum, not every hold,
-- so it costs the same with one request in flight or a thousand; it
-- recounts the holds only once "sweep" has passed (about once per
-- imgbill_hold_ttl on a busy account), or when the sum is missing (a
-- first hold, an older imgbill).  A hold released by something other
-- than these scripts leaves the sum too high until that recount: on the
-- side of refusing, never of overspending.

-- unpack() takes at most this many values (LUAI_MAXCSTACK is 8000)
local UNPACK_MAX = 2000


local function prefix(acct)
  return 'imgbill:{' .. acct .. '}:'
end


-- Gives one hold back.  The worker that placed it knows its amount and
-- saves reading it back; a journal replay does not (amount 0 or '').

local function unhold(holds, held, rid, amount)
  amount = tonumber(amount)
  if amount and amount > 0 then
    if redis.call('HDEL', holds, rid) == 0 then return 0 end
  else
    local h = redis.call('HGET', holds, rid)
    if not h then return 0 end
    redis.call('HDEL', holds, rid)
    amount = tonumber(string.match(h, '^(%d+)') or '0')
  end
  if redis.call('HINCRBY', held, 'units', -amount) < 0 then
    redis.call('HSET', held, 'units', 0, 'sweep', 0)
  end
  return 1
end


-- The sum of an account's live holds, from "held" while "sweep" has not
-- passed, else recounted from "holds": returns the sum, the new sweep
-- time (nil when the sum was read, not recounted) and the expired
-- request ids.

local function held_sum(holds, heldk, now, exp)
  local s = redis.call('HMGET', heldk, 'units', 'sweep')
  local held, sweep = tonumber(s[1]), tonumber(s[2])
  local stale = {}
  if held and sweep and sweep > now then
    return held, nil, stale
  end
  held, sweep = 0, exp
  local h = redis.call('HGETALL', holds)
  for i = 1, #h, 2 do
    local amount, e = string.match(h[i + 1], '^(%d+):(%d+)$')
    e = tonumber(e)
    if amount and e > now then
      held = held + tonumber(amount)
      if e < sweep then sweep = e end
    else
      stale[#stale + 1] = h[i]
    end
  end
  return held, sweep, stale
end


-- admit: the gate and the hold, atomically.
--   KEYS: imgbill:key:<sha256 of the API key>
--   ARGV: request id, gate (units), hold (units), hold ttl (s)
--   -> {-1} unknown key | {0, account, balance, available} gate not met
--      | {1, account, balance, available} hold placed
--
-- A rejection writes nothing.  The key lookup is the one cross-slot
-- read: everything written lives under {account}.

local function admit(KEYS, ARGV)
  local rid, gate, hold, ttl =
    ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
  local acct = redis.call('GET', KEYS[1])
  if not acct then return {-1} end
  local p = prefix(acct)
  local holds, heldk = p .. 'holds', p .. 'held'
  local bal = tonumber(redis.call('GET', p .. 'balance') or '0')
  local now = tonumber(redis.call('TIME')[1])
  local exp = now + tonumber(ttl)
  local held, sweep, stale = held_sum(holds, heldk, now, exp)
  local avail = bal - held
  if avail < gate then return {0, acct, bal, avail} end
  for i = 1, #stale, UNPACK_MAX do
    redis.call('HDEL', holds,
               unpack(stale, i, math.min(i + UNPACK_MAX - 1, #stale)))
  end
  redis.call('HSET', holds, rid, hold .. ':' .. exp)
  if sweep then
    redis.call('HSET', heldk, 'units', held + tonumber(hold),
               'sweep', sweep)
  else
    redis.call('HINCRBY', heldk, 'units', hold)
  end
  return {1, acct, bal, avail}
end


-- settle: the charge, the hold given back and the ledger entry, once.
--   KEYS: balance, holds, ledger, settled marker, held (all {account})
--   ARGV: request id, charge, channel, model, prompt tokens, completion
--         tokens, marker ttl (s), time, hold (0: not known)
--   -> {1, balance} applied | {0, balance} already applied earlier
--
-- The marker makes a charge idempotent per request id: setting it is
-- the test.  Redis undoes nothing a failing script did, so a failure (a
-- key of the wrong type) before the balance moved takes the marker
-- back, and the journal can try again; once the balance moved, the
-- marker stays, and the charge is never applied twice.  A free outcome
-- only gives the hold back and writes no ledger entry.  The time is the
-- relay's: when the charge was decided.

local function settle(KEYS, ARGV)
  local balk, holds, ledger, marker, heldk =
    KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
  local rid, charge, channel, model, pt, ct, ttl, ts, hold =
    ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5], ARGV[6],
    ARGV[7], ARGV[8], ARGV[9]

  if charge <= 0 then
    if redis.call('EXISTS', marker) == 0 then
      unhold(holds, heldk, rid, hold)
      return {1, tonumber(redis.call('GET', balk) or '0')}
    end

  elseif redis.call('SET', marker, ARGV[2], 'NX', 'EX', ttl) then
    local bal
    local ok, e = pcall(function()
      unhold(holds, heldk, rid, hold)
      bal = redis.call('DECRBY', balk, ARGV[2])
      redis.call('XADD', ledger, '*', 'type', 'charge', 'request_id', rid,
                 'ts', ts, 'channel', channel, 'model', model,
                 'prompt_tokens', pt, 'completion_tokens', ct,
                 'charge', ARGV[2], 'balance_after', bal)
    end)
    if not ok then
      if not bal then redis.call('DEL', marker) end
      error(e)
    end
    return {1, bal}
  end

  -- Applied before (a journal replay): the marker is written again, so
  -- that this call writes something and a WAIT after it covers the
  -- original charge, on whichever connection that was made.
  redis.call('EXPIRE', marker, ttl)
  return {0, tonumber(redis.call('GET', balk) or '0')}
end


-- release: an unused hold goes back; the account is known.
--   KEYS: holds, held (both {account})
--   ARGV: request id, hold (0: not known)
--   -> 1 released | 0 no such hold

local function release(KEYS, ARGV)
  return unhold(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
end


-- release_key: as release, when only the key is known.  An admission
-- whose reply was lost may have placed a hold, and only the journal's R
-- line remembers it, by the key's hash.
--   KEYS: imgbill:key:<sha256 of the API key>
--   ARGV: request id
--   -> 1 released | 0 no such hold or key

local function release_key(KEYS, ARGV)
  local acct = redis.call('GET', KEYS[1])
  if not acct then return 0 end
  local p = prefix(acct)
  return unhold(p .. 'holds', p .. 'held', ARGV[1], '')
end


-- lookup: whose key it is, for what the module serves itself (the model
-- lists); nothing is held or written.
--   KEYS: imgbill:key:<sha256 of the API key>
--   ARGV: none
--   -> {-1} unknown key | {1, account}

local function lookup(KEYS, ARGV)
  local acct = redis.call('GET', KEYS[1])
  if not acct then return {-1} end
  return {1, acct}
end


-- info: what a key holder may read of their own account; nothing is
-- written.  The ledger is read newest first, from before a cursor (a
-- stream id, exclusive); usage sums the charges between two stream ids.
--   KEYS: imgbill:key:<sha256 of the API key>
--   ARGV: what ("account", "ledger" or "usage"), limit, cursor ('' for
--         the newest), from id, to id (exclusive)
--   -> {-1} unknown key | {1, account, balance, held}
--      | ledger: {1, account, balance, held, more, entries}
--      | usage: {1, account, balance, held, charged}

local function info(KEYS, ARGV)
  local acct = redis.call('GET', KEYS[1])
  if not acct then return {-1} end
  local p = prefix(acct)
  local bal = tonumber(redis.call('GET', p .. 'balance') or '0')
  local now = tonumber(redis.call('TIME')[1])
  local held = held_sum(p .. 'holds', p .. 'held', now, now)
  local what = ARGV[1]

  if what == 'ledger' then
    local limit = tonumber(ARGV[2])
    local from = ARGV[3] == '' and '+' or '(' .. ARGV[3]
    local e = redis.call('XREVRANGE', p .. 'ledger', from, '-',
                         'COUNT', limit + 1)
    local more = 0
    if #e > limit then
      more = 1
      e[#e] = nil
    end
    return {1, acct, bal, held, more, e}
  end

  if what == 'usage' then
    local charged = 0
    local e = redis.call('XRANGE', p .. 'ledger', ARGV[4], '(' .. ARGV[5])
    for i = 1, #e do
      local f, kind, charge = e[i][2], 'charge', 0
      for j = 1, #f, 2 do
        if f[j] == 'type' then kind = f[j + 1] end
        if f[j] == 'charge' then charge = tonumber(f[j + 1]) or 0 end
      end
      if kind == 'charge' then charged = charged + charge end
    end
    return {1, acct, bal, held, charged}
  end

  return {1, acct, bal, held}
end


-- The batch: each command runs under pcall, so it keeps its own
-- atomicity and its own result, and one failing (a key of the wrong
-- type) answers that command with an error and no other.  The numbers
-- are those of ngx_http_imgbill_script_e, from 1.

local run = {admit, settle, release, release_key, lookup, info}
local out, k, i = {}, 1, 1
while i <= #ARGV do
  local f = run[tonumber(ARGV[i])]
  local nk, na = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local ok, r = pcall(f, {unpack(KEYS, k, k + nk - 1)},
                      {unpack(ARGV, i + 3, i + 2 + na)})
  if not ok then
    r = {err = type(r) == 'table' and r.err or tostring(r)}
  end
  out[#out + 1] = r
  k, i = k + nk, i + 3 + na
end
return out
