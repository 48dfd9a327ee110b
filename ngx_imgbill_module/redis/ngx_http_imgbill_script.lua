-- imgbill's one Redis script: admit, settle, release, release_key,
-- lookup, info, refresh, reverse, redeem, key_list, key_new, key_del and
-- key_drop (the CLI's), and a loop that runs a batch of them in one call.
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

-- What a command costs Redis is mostly the redis.call()s it makes and the
-- numbers it converts (a number from a string is strtod(), a number
-- passed to a command is printed with "%.17g"), so the functions here
-- make as few of either as they can: amounts travel as the strings they
-- arrive as, the batch reads TIME once, and the functions read their
-- arguments in place.  "s + 0" turns a string into a number with one
-- strtod(), where tonumber(s) makes two.

local call, byte, tonumber, pcall = redis.call, string.byte, tonumber, pcall
local KEYS, ARGV = KEYS, ARGV

-- unpack() takes at most this many values (LUAI_MAXCSTACK is 8000)
local UNPACK_MAX = 2000


-- Redis' clock, read once per call of the script: its commands run at
-- one instant anyway.

local now

local function clock()
  if not now then now = tonumber(call('TIME')[1]) end
  return now
end


-- A hold's expiry for a ttl (s), as a number and as the string the holds
-- hash stores; one relay's admissions share a ttl, so a batch of them
-- computes it once.

local exp_ttl, exp_n, exp_s

local function expiry(ttl)
  if ttl ~= exp_ttl then
    exp_ttl, exp_n = ttl, clock() + tonumber(ttl)
    exp_s = string.format('%d', exp_n)
  end
  return exp_n, exp_s
end


-- Gives one hold back.  The worker that placed it knows its amount (a
-- decimal string) and saves reading it back; a journal replay does not
-- (amount '0' or '').

local function unhold(holds, held, rid, amount)
  if amount ~= '0' and amount ~= '' then
    if call('HDEL', holds, rid) == 0 then return 0 end
  else
    local h = call('HGET', holds, rid)
    if not h then return 0 end
    call('HDEL', holds, rid)
    amount = string.match(h, '^(%d+)') or '0'
  end
  -- "-0" is no integer to Redis
  if amount ~= '0' and call('HINCRBY', held, 'units', '-' .. amount) < 0 then
    call('HSET', held, 'units', 0, 'sweep', 0)
  end
  return 1
end


-- The sum of an account's live holds, from "held" while "sweep" has not
-- passed, else recounted from "holds": returns the sum, the new sweep
-- time and the expired request ids (both nil when the sum was read, not
-- recounted).

local function held_sum(holds, heldk, now, exp)
  local s = call('HMGET', heldk, 'units', 'sweep')
  local held, sweep = s[1], s[2]
  if held and sweep and sweep + 0 > now then
    return held + 0
  end
  local stale = {}
  held, sweep = 0, exp
  local h = call('HGETALL', holds)
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


-- Each function takes the positions of its first key in KEYS (k) and of
-- its first argument in ARGV (a).

-- A day of the proleptic Gregorian calendar, UTC, for unix seconds
-- (days_from_civil's inverse, as in Howard Hinnant's date algorithms):
-- the per-day totals are keyed by it.

local floor = math.floor

local day_n, day_s

local function utc_day(ts)
  local z = floor(ts / 86400) + 719468
  -- a batch's charges fall on one day, or two
  if z == day_n then return day_s end
  day_n = z
  local era = floor(z / 146097)
  local doe = z - era * 146097
  local yoe = floor((doe - floor(doe / 1460) + floor(doe / 36524)
                     - floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + floor(yoe / 4) - floor(yoe / 100))
  local mp = floor((5 * doy + 2) / 153)
  local d = doy - floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400 + (m <= 2 and 1 or 0)
  day_s = string.format('%04d-%02d-%02d', y, m, d)
  return day_s
end


-- A key's own limits live beside its account, in imgbill:{acct}:key:<id>
-- (id: the first 12 hex digits of the key's hash): a hash of "limit",
-- "daily_limit" (units), "expires" (unix s), "models" and "ips" (comma
-- lists; an ip is "4:" or "6:", the address's hex digits, "/" and the
-- prefix length), and what the key spent: "spent", and "day_spent" on
-- UTC day "day".  Its live holds are kept as the account's are, in
-- imgbill:{acct}:key:<id>:holds and their sum in ...:held.  A key without
-- that hash has no limits; one with it ("since": when its spend began to
-- count) is counted, limits or not.  The admission reads it with one
-- HGETALL either way: a missing hash costs an empty reply, not a field
-- list and as many nils.

local KEY_FIELDS = {since = 1, limit = 1, daily_limit = 1, expires = 1,
                    models = 1, ips = 1, spent = 1, day = 1, day_spent = 1}

local function key_prefix(p, id) return p .. 'key:' .. id end

-- whether an address ("4:c0a80001") is in a list of networks
local function ip_in(list, ip)
  local v, a = string.match(ip, '^(%d):(%x+)$')
  if not v then return false end
  for net in string.gmatch(list, '[^,]+') do
    local nv, hex, bits = string.match(net, '^(%d):(%x+)/(%d+)$')
    if nv == v then
      bits = tonumber(bits)
      local full = floor(bits / 4)
      if string.sub(a, 1, full) == string.sub(hex, 1, full) then
        local rest = bits - full * 4
        if rest == 0 then return true end
        local d = 2 ^ (4 - rest)
        if floor(tonumber(string.sub(a, full + 1, full + 1), 16) / d)
           == floor(tonumber(string.sub(hex, full + 1, full + 1), 16) / d)
        then
          return true
        end
      end
    end
  end
  return false
end

-- a key's limits against a request: nil, or the admission's refusal
local function key_refusal(f, acct, model, ip, hold, held, now)
  if f.expires and f.expires + 0 <= now then
    return {-2, acct, tonumber(f.expires)}
  end
  if f.models and (string.find(model, ',', 1, true)
                   or not string.find(',' .. f.models .. ',',
                                      ',' .. model .. ',', 1, true))
  then
    return {-3, acct}
  end
  if f.ips and not ip_in(f.ips, ip) then return {-4, acct} end
  if f.limit then
    local left = f.limit - (f.spent or 0) - held
    if left < hold then return {-5, acct, left, 1} end
  end
  if f.daily_limit then
    local spent = f.day == utc_day(now) and f.day_spent or 0
    local left = f.daily_limit - spent - held
    if left < hold then return {-5, acct, left, 2} end
  end
  return nil
end

-- A hold into a holds hash and its sum, as held_sum() read them.

local function place(holds, heldk, rid, hold, exps, held, sweep, stale)
  if stale then
    for i = 1, #stale, UNPACK_MAX do
      call('HDEL', holds,
           unpack(stale, i, math.min(i + UNPACK_MAX - 1, #stale)))
    end
  end
  call('HSET', holds, rid, hold .. ':' .. exps)
  if sweep then
    call('HSET', heldk, 'units', held + tonumber(hold), 'sweep', sweep)
  else
    call('HINCRBY', heldk, 'units', hold)
  end
end

-- admit: the gate and the hold, atomically.
--   KEYS: imgbill:key:<sha256 of the API key>
--   ARGV: request id, gate (units), hold (units), hold ttl (s), and (an
--         older relay sends neither) the model, the client's address
--         ("4:" or "6:" and its hex digits)
--   -> {-1} unknown key | {0, account, balance, available} gate not met
--      | {1, account, balance, available [, 1: the key has limits]} hold
--        placed | the key's limits refuse: {-2, account, expired at}
--      | {-3, account} model | {-4, account} address
--      | {-5, account, left, 1 total or 2 daily} spending limit
--
-- A rejection writes nothing.  The key lookup is the one cross-slot
-- read: everything written lives under {account}.

local function admit(k, a, n)
  local acct = call('GET', KEYS[k])
  if not acct then return {-1} end
  local p = 'imgbill:{' .. acct .. '}:'
  local holds, heldk = p .. 'holds', p .. 'held'
  local hold = ARGV[a + 2]
  local exp, exps = expiry(ARGV[a + 3])
  local t = clock()

  local kk = key_prefix(p, string.sub(KEYS[k], 13, 24))
  local kf = call('HGETALL', kk)
  local f, kheld, ksweep, kstale
  for i = 1, #kf, 2 do
    if KEY_FIELDS[kf[i]] then
      f = f or {}
      f[kf[i]] = kf[i + 1]
    end
  end
  if f then
    kheld, ksweep, kstale = held_sum(kk .. ':holds', kk .. ':held', t, exp)
    local no = key_refusal(f, acct, n > 4 and ARGV[a + 4] or '',
                           n > 5 and ARGV[a + 5] or '', hold + 0, kheld, t)
    if no then return no end
  end

  local bal = (call('GET', p .. 'balance') or 0) + 0
  local held, sweep, stale = held_sum(holds, heldk, t, exp)
  local avail = bal - held
  if avail < ARGV[a + 1] + 0 then return {0, acct, bal, avail} end
  place(holds, heldk, ARGV[a], hold, exps, held, sweep, stale)
  if not f then return {1, acct, bal, avail} end

  place(kk .. ':holds', kk .. ':held', ARGV[a], hold, exps, kheld, ksweep,
        kstale)
  call('HSET', kk, 'last_used', t)
  return {1, acct, bal, avail, 1}
end


-- settle: the charge, the hold given back and the ledger entry, once.
--   KEYS: balance, holds, ledger, settled marker, held (all {account})
--   ARGV: request id, charge, channel, model, prompt tokens, completion
--         tokens, marker ttl (s), time, hold ('0': not known), images
--         delivered (entries written before images were counted have
--         none: read them as one), the API the client spoke, the key's
--         id, and '1' if the key has limits (each absent or '': not
--         known, no field; no limits)
--   -> {1, balance} applied | {0, balance} already applied earlier
--
-- The marker makes a charge idempotent per request id: setting it is
-- the test.  Redis undoes nothing a failing script did, so a failure (a
-- key of the wrong type) before the balance moved takes the marker
-- back, and the journal can try again; once the balance moved, the
-- marker stays, and the charge is never applied twice.  A free outcome
-- only gives the hold back and writes no ledger entry.  The time is the
-- relay's: when the charge was decided, and the day of the key's daily
-- spend; a charge of a day before the key's (a replay after midnight)
-- counts in its total only.

local function debit(holds, heldk, rid, hold, balk, charge)
  unhold(holds, heldk, rid, hold)
  return call('DECRBY', balk, charge)
end

-- the key's hold given back, and its spend counted (a key deleted
-- meanwhile is not brought back)
local function key_spend(kk, rid, hold, charge, ts)
  unhold(kk .. ':holds', kk .. ':held', rid, hold)
  if not charge or call('EXISTS', kk) == 0 then return end
  call('HINCRBY', kk, 'spent', charge)
  local d, day = utc_day(ts), call('HGET', kk, 'day')
  if d == day then
    call('HINCRBY', kk, 'day_spent', charge)
  elseif not day or d > day then
    call('HSET', kk, 'day', d, 'day_spent', charge)
  end
end

local function settle(k, a, n)
  local balk, holds, marker, heldk =
    KEYS[k], KEYS[k + 1], KEYS[k + 3], KEYS[k + 4]
  local rid, charge, hold = ARGV[a], ARGV[a + 1], ARGV[a + 8]
  local kid = n > 11 and ARGV[a + 11] or ''
  local kk = n > 12 and ARGV[a + 12] == '1'
             and key_prefix(string.sub(balk, 1, -8), kid)

  -- the relay writes a charge as %i: "0" or negative is no charge
  if charge == '0' or byte(charge) == 45 then
    if call('EXISTS', marker) == 0 then
      unhold(holds, heldk, rid, hold)
      if kk then key_spend(kk, rid, hold) end
      return {1, tonumber(call('GET', balk) or '0')}
    end

  elseif call('SET', marker, charge, 'NX', 'EX', ARGV[a + 6]) then
    local ok, bal = pcall(debit, holds, heldk, rid, hold, balk, charge)
    if not ok then
      call('DEL', marker)
      error(bal)
    end
    -- "api" and "key" only when known: the entry's fields are built at
    -- their full count once, and unpack() told where they end
    local api = n > 10 and ARGV[a + 10] or ''
    local x, y, m = 'api', api, 24
    if api == '' then x, y, m = 'key', kid, 22 end
    if kid == '' then m = m - 2 end
    local id = call('XADD', KEYS[k + 2], '*', unpack({
      'type', 'charge', 'request_id', rid, 'ts', ARGV[a + 7],
      'channel', ARGV[a + 2], 'model', ARGV[a + 3],
      'prompt_tokens', ARGV[a + 4], 'completion_tokens', ARGV[a + 5],
      'images', ARGV[a + 9], 'charge', charge, 'balance_after', bal,
      x, y, 'key', kid}, 1, m))
    if kk then key_spend(kk, rid, hold, charge, ARGV[a + 7] + 0) end
    -- the day's total, beside the ledger; "since", the first entry the
    -- totals count (usage scans the ledger only before it), can only be
    -- missing on a day's first charge
    local daily = string.sub(KEYS[k + 2], 1, -7) .. 'daily'
    if call('HINCRBY', daily, utc_day(ARGV[a + 7] + 0), charge)
       == charge + 0
    then
      call('HSETNX', daily, 'since', id)
    end
    return {1, bal}
  end

  -- Applied before (a journal replay), or reversed before it came (the
  -- reversal's marker): the marker is written again, so that this call
  -- writes something and a WAIT after it covers the original charge, on
  -- whichever connection that was made.  The hold goes all the same: a
  -- reversal that overtook its settlement (Redis away meanwhile) left it.
  call('EXPIRE', marker, ARGV[a + 6])
  unhold(holds, heldk, rid, hold)
  if kk then key_spend(kk, rid, hold) end
  return {0, tonumber(call('GET', balk) or '0')}
end


-- reverse: a charge given back, once, because its reply was never written
-- (the client left while the charge was settled).
--   KEYS: balance, ledger, settled marker (all {account})
--   ARGV: request id, marker ttl (s), time, the charge's time, and the
--         key's id if it has limits (absent or '': none)
--   -> {1, balance} given back | {0, balance} given back before
--      | {2, balance} not settled (yet): it never will be
--
-- The settled marker holds what was charged; REVERSED takes its place.
-- So a reversal runs once, and a settlement that comes after it (from
-- the journal: Redis was away) finds its request applied and charges
-- nothing.  The day's total loses the amount on the charge's own day,
-- and so does the key's spend.

local REVERSED = 'reversed'

local function reverse(k, a, n)
  local balk, ledger, marker = KEYS[k], KEYS[k + 1], KEYS[k + 2]
  local charged = call('GET', marker)
  if charged == REVERSED then
    return {0, tonumber(call('GET', balk) or '0')}
  end
  call('SET', marker, REVERSED, 'EX', ARGV[a + 1])
  if not charged then
    return {2, tonumber(call('GET', balk) or '0')}
  end
  local bal = call('INCRBY', balk, charged)
  call('XADD', ledger, '*', 'type', 'reversal', 'request_id', ARGV[a],
       'ts', ARGV[a + 2], 'charge_ts', ARGV[a + 3], 'amount', charged,
       'balance_after', bal)
  local daily = string.sub(ledger, 1, -7) .. 'daily'
  if call('HEXISTS', daily, 'since') == 1 then
    call('HINCRBY', daily, utc_day(ARGV[a + 3] + 0), '-' .. charged)
  end
  local kk = n > 4 and ARGV[a + 4] ~= ''
             and key_prefix(string.sub(balk, 1, -8), ARGV[a + 4])
  if kk and call('EXISTS', kk) == 1 then
    call('HINCRBY', kk, 'spent', '-' .. charged)
    if call('HGET', kk, 'day') == utc_day(ARGV[a + 3] + 0) then
      call('HINCRBY', kk, 'day_spent', '-' .. charged)
    end
  end
  return {1, bal}
end


-- release: an unused hold goes back; the account is known.
--   KEYS: holds, held (both {account})
--   ARGV: request id, hold ('0': not known), and the key's id if it has
--         limits (absent or '': none)
--   -> 1 released | 0 no such hold

local function release(k, a, n)
  if n > 2 and ARGV[a + 2] ~= '' then
    local kk = key_prefix(string.sub(KEYS[k], 1, -6), ARGV[a + 2])
    unhold(kk .. ':holds', kk .. ':held', ARGV[a], ARGV[a + 1])
  end
  return unhold(KEYS[k], KEYS[k + 1], ARGV[a], ARGV[a + 1])
end


-- refresh: the hold of a request still alive lives on, another ttl from
-- now; one already settled, released or swept is not brought back.
--   KEYS: holds ({account})
--   ARGV: request id, hold (units), hold ttl (s), and the key's id if it
--         has limits (absent or '': none): its hold lives on too
--   -> 1 refreshed | 0 no such hold
--
-- Only the expiry moves: "held" keeps its sum, and its "sweep" stays a
-- time before which no hold can expire.

local function refresh(k, a, n)
  local holds, rid = KEYS[k], ARGV[a]
  if call('HEXISTS', holds, rid) == 0 then return 0 end
  local _, exps = expiry(ARGV[a + 2])
  call('HSET', holds, rid, ARGV[a + 1] .. ':' .. exps)
  if n > 3 and ARGV[a + 3] ~= '' then
    local kh = key_prefix(string.sub(holds, 1, -6), ARGV[a + 3]) .. ':holds'
    if call('HEXISTS', kh, rid) == 1 then
      call('HSET', kh, rid, ARGV[a + 1] .. ':' .. exps)
    end
  end
  return 1
end


-- The functions below serve key holders' pages, the CLI and the
-- journal's replays; a request's admission and settlement never need
-- them.  Redis runs this whole file at every call (EVALSHA keeps it
-- compiled, but the closures it makes are made again each time), and
-- theirs cost more than all the rest: a call that does nothing took
-- 6.9 us with them, 3.0 us without, 1.9 us for a one-line script
-- (redis-benchmark, pipelined).  Only a call that carries one of them
-- makes them.

local function seldom()

  -- release_key: as release, when only the key is known.  An admission
  -- whose reply was lost may have placed a hold, and only the journal's R
  -- line remembers it, by the key's hash.
  --   KEYS: imgbill:key:<sha256 of the API key>
  --   ARGV: request id
  --   -> 1 released | 0 no such hold or key

  local function release_key(k, a)
    local acct = call('GET', KEYS[k])
    if not acct then return 0 end
    local kk = key_prefix('imgbill:{' .. acct .. '}:',
                          string.sub(KEYS[k], 13, 24))
    unhold(kk .. ':holds', kk .. ':held', ARGV[a], '')
    return unhold('imgbill:{' .. acct .. '}:holds',
                  'imgbill:{' .. acct .. '}:held', ARGV[a], '')
  end


  -- lookup: whose key it is, for what the module serves itself (the model
  -- lists); nothing is held or written.
  --   KEYS: imgbill:key:<sha256 of the API key>
  --   ARGV: none
  --   -> {-1} unknown key | {1, account}

  local function lookup(k, a)
    local acct = call('GET', KEYS[k])
    if not acct then return {-1} end
    return {1, acct}
  end


  -- info: what a key holder may read of their own account; nothing is
  -- written.  The ledger is read newest first, from before a cursor (a
  -- stream id, exclusive); usage sums the charges (less their reversals)
  -- between two stream ids at UTC midnights, from the per-day totals
  -- (imgbill:{acct}:daily), and
  -- from the ledger only before the first entry the totals count ("since";
  -- "0": all, after `imgbill usage-backfill`), at most USAGE_SCAN entries
  -- of it: a key holder's read costs Redis the days asked for (the last
  -- USAGE_DAYS at most), not the ledger's length.  A charge counts on the
  -- day the relay decided it ("ts"), a journal's replay included.
  --   KEYS: imgbill:key:<sha256 of the API key>
  --   ARGV: what ("account", "ledger" or "usage"), limit, cursor ('' for
  --         the newest), from id, to id (exclusive)
  --   -> {-1} unknown key | {1, account, balance, held}
  --      | ledger: {1, account, balance, held, more, entries}
  --      | usage: {1, account, balance, held, charged}
  --      | usage, the ledger too long to scan: {2, account, balance, held}

  local USAGE_SCAN = 10000
  local USAGE_DAYS = 3660

  local function ms(id)
    return tonumber(string.match(id, '^(%d+)')) or 0
  end

  -- the charges of ledger entries [from, to), or nil past USAGE_SCAN
  local function scan(ledger, from, to)
    local e = call('XRANGE', ledger, from, '(' .. to, 'COUNT', USAGE_SCAN + 1)
    if #e > USAGE_SCAN then return nil end
    local charged = 0
    for i = 1, #e do
      local f, kind, charge, amount = e[i][2], 'charge', 0, 0
      for j = 1, #f, 2 do
        if f[j] == 'type' then kind = f[j + 1] end
        if f[j] == 'charge' then charge = tonumber(f[j + 1]) or 0 end
        if f[j] == 'amount' then amount = tonumber(f[j + 1]) or 0 end
      end
      if kind == 'charge' then charged = charged + charge end
      if kind == 'reversal' then charged = charged - amount end
    end
    return charged
  end

  local function usage(p, from, to)
    local since = call('HGET', p .. 'daily', 'since')
    local charged = 0
    if since ~= '0' then
      local upto = since and ms(since) < ms(to) and since or to
      charged = scan(p .. 'ledger', from, upto)
      if not charged then return nil end
      if not since then return charged end
    end
    -- the days asked for, up to today, at most USAGE_DAYS of them
    local hi = math.min(floor(ms(to) / 86400000), floor(clock() / 86400) + 1)
    local days = {}
    for t = math.max(floor(ms(from) / 86400000), hi - USAGE_DAYS), hi - 1 do
      days[#days + 1] = utc_day(t * 86400)
    end
    for i = 1, #days, UNPACK_MAX do
      local v = call('HMGET', p .. 'daily',
                     unpack(days, i, math.min(i + UNPACK_MAX - 1, #days)))
      for j = 1, #v do charged = charged + (tonumber(v[j]) or 0) end
    end
    return charged
  end

  local function info(k, a)
    local acct = call('GET', KEYS[k])
    if not acct then return {-1} end
    local p = 'imgbill:{' .. acct .. '}:'
    local bal = tonumber(call('GET', p .. 'balance') or '0')
    local t = clock()
    local held = held_sum(p .. 'holds', p .. 'held', t, t)
    local what = ARGV[a]

    if what == 'ledger' then
      local limit = tonumber(ARGV[a + 1])
      -- nothing comes before the first id there can be
      if ARGV[a + 2] == '0-0' then return {1, acct, bal, held, 0, {}} end
      local from = ARGV[a + 2] == '' and '+' or '(' .. ARGV[a + 2]
      local e = call('XREVRANGE', p .. 'ledger', from, '-', 'COUNT', limit + 1)
      local more = 0
      if #e > limit then
        more = 1
        e[#e] = nil
      end
      return {1, acct, bal, held, more, e}
    end

    if what == 'usage' then
      local charged = usage(p, ARGV[a + 3], ARGV[a + 4])
      if not charged then return {2, acct, bal, held} end
      return {1, acct, bal, held, charged}
    end

    return {1, acct, bal, held}
  end


  -- redeem: a redemption code credits the caller's account, once.
  --   KEYS: imgbill:key:<sha256 of the API key>,
  --         imgbill:code:<sha256 of the code>
  --   ARGV: the key's id (its hash's first 12 digits), the code's id
  --   -> {-1} unknown key | {-2} no such code | {-3, used at} spent
  --      | {-4, expired at} expired | {1, account, balance, amount}
  --
  -- The code is spent and the credit written in one call: of any number of
  -- concurrent redeems exactly one finds the code unspent.  The credit is a
  -- ledger entry as the CLI's topup writes one, reason "redeem".  A code
  -- lives outside any account's slot, as the key does.

  local function redeem(k, a)
    local acct = call('GET', KEYS[k])
    if not acct then return {-1} end
    local code = KEYS[k + 1]
    local c = call('HMGET', code, 'amount', 'expires', 'used_at')
    local amount = c[1]
    if not amount then return {-2} end
    if c[3] then return {-3, tonumber(c[3])} end
    local t = clock()
    if c[2] and c[2] ~= '' and c[2] + 0 <= t then
      return {-4, tonumber(c[2])}
    end
    local p = 'imgbill:{' .. acct .. '}:'
    call('HSET', code, 'used_at', t, 'account', acct, 'key', ARGV[a])
    local bal = call('INCRBY', p .. 'balance', amount)
    call('XADD', p .. 'ledger', '*', 'type', 'credit', 'amount', amount,
         'reason', 'redeem', 'code', ARGV[a + 1], 'key', ARGV[a],
         'ts', t, 'balance_after', bal)
    return {1, acct, bal, tonumber(amount)}
  end


  -- The keys a key holder manages (/v1/imgbill/keys).  The account's index,
  -- imgbill:{acct}:keys, maps a key's id to its full hash (a key is deleted
  -- by id); these functions and the CLI keep it.  A key with limits of its
  -- own is "narrow": it sees and deletes only itself and the keys it made
  -- (through up to KEY_DEPTH keys between), and what it gives a key it
  -- makes comes out of its own limits.  A total limit of 1.00 that makes a
  -- key of 0.30 keeps 0.70, so the limits of a family of keys never add up
  -- to more than the operator gave; deleting the key gives back what it did
  -- not spend.  A key without limits manages every key of its account.

  local KEY_LIMITS = {'limit', 'daily_limit', 'expires', 'models', 'ips'}
  local KEY_ROW = {'name', 'since', 'limit', 'spent', 'daily_limit', 'day',
                   'day_spent', 'expires', 'models', 'ips', 'last_used',
                   'parent'}
  local KEY_DEPTH, KEYS_MAX = 16, 100

  local function narrow(c)
    for i = 1, #KEY_LIMITS do
      if c[i] then return true end
    end
    return false
  end

  -- whether key id is key cid or one it made
  local function made_by(p, id, cid)
    for _ = 1, KEY_DEPTH do
      if not id then return false end
      if id == cid then return true end
      id = call('HGET', key_prefix(p, id), 'parent')
    end
    return false
  end

  -- a key as a list shows it: id, name, created, limit, spent, daily limit,
  -- spent today, expires, models, networks, last used, made by, current
  -- ('1' or '0'); '' where it has none
  local function key_row(p, id, cid, t)
    local f = call('HMGET', key_prefix(p, id), unpack(KEY_ROW))
    local today = f[6] == utc_day(t) and f[7] or '0'
    return {id, f[1] or '', f[2] or '', f[3] or '', f[4] or '0', f[5] or '',
            today, f[8] or '', f[9] or '', f[10] or '', f[11] or '',
            f[12] or '', id == cid and '1' or '0'}
  end

  -- the caller of key_new or key_del: its limits, or a refusal
  local function key_caller(k, a)
    local acct = call('GET', KEYS[k])
    if not acct then return nil, {-1} end
    local p = 'imgbill:{' .. acct .. '}:'
    local c = call('HMGET', key_prefix(p, ARGV[a]), unpack(KEY_LIMITS))
    if c[3] and c[3] + 0 <= clock() then
      return nil, {-2, acct, tonumber(c[3])}
    end
    if c[5] and not ip_in(c[5], ARGV[a + 1]) then return nil, {-4, acct} end
    return acct, p, c
  end

  -- key_list: the keys the caller may see.
  --   KEYS: imgbill:key:<sha256 of the caller's key>
  --   ARGV: the caller's id, the client's address (unused: a key reads
  --         its keys from anywhere, as it reads its account), an id to
  --         show alone ('' all)
  --   -> {-1} unknown key | {-8, account} no such key
  --      | {1, account, {row, ...}}, oldest first
  --
  -- A key made before the index is shown to itself, and to the others
  -- once the CLI's key-list has indexed it.

  local function key_list(k, a)
    local acct = call('GET', KEYS[k])
    if not acct then return {-1} end
    local p = 'imgbill:{' .. acct .. '}:'
    local cid, only, t = ARGV[a], ARGV[a + 2], clock()
    local nar = narrow(call('HMGET', key_prefix(p, cid), unpack(KEY_LIMITS)))
    local rows, seen = {}, {}
    local function add(id)
      if not seen[id] and (only == '' or id == only)
         and (not nar or made_by(p, id, cid))
      then
        seen[id] = true
        rows[#rows + 1] = key_row(p, id, cid, t)
      end
    end
    add(cid)
    local ids = call('HGETALL', p .. 'keys')
    for i = 1, #ids, 2 do
      -- an id is 12 hex digits: anything else in the index is no key's
      if not seen[ids[i]] and string.match(ids[i], '^%x+$') and #ids[i] == 12
         and call('GET', 'imgbill:key:' .. ids[i + 1]) == acct
      then
        add(ids[i])
      end
    end
    if only ~= '' and #rows == 0 then return {-8, acct} end
    table.sort(rows, function(x, y)
      local cx, cy = tonumber(x[3]) or 0, tonumber(y[3]) or 0
      if cx ~= cy then return cx < cy end
      return x[1] < y[1]
    end)
    return {1, acct, rows}
  end

  -- whether each network of a list lies in one of the caller's
  local function nets_in(list, caller)
    for net in string.gmatch(list, '[^,]+') do
      local v, hex, bits = string.match(net, '^(%d):(%x+)/(%d+)$')
      local inside = false
      for cn in string.gmatch(caller, '[^,]+') do
        local cbits = string.match(cn, '/(%d+)$')
        if v and cbits and cbits + 0 <= bits + 0
           and ip_in(cn, v .. ':' .. hex)
        then
          inside = true
          break
        end
      end
      if not inside then return false end
    end
    return true
  end

  -- whether each model of a list is one of the caller's
  local function models_in(list, caller)
    for m in string.gmatch(list, '[^,]+') do
      if not string.find(',' .. caller .. ',', ',' .. m .. ',', 1, true) then
        return false
      end
    end
    return true
  end

  -- key_new: a key for the caller's account, no wider than the caller.
  --   KEYS: imgbill:key:<sha256 of the caller's key>,
  --         imgbill:key:<sha256 of the new key>
  --   ARGV: the caller's id, the client's address (as admit's), the new
  --         key's id, name, limit, daily limit (units), expires (unix s),
  --         models, networks (as the CLI stores them); '' for none
  --   -> {-1} | {-2, account, expired at} | {-4, account}: as admit's
  --      | {-6, account, what, bound} wider than the caller: what is 1
  --        limit, 2 daily limit (bound: what is left to give), 3 expires
  --        (bound: the caller's), 4 models, 5 networks
  --      | {-7, account, KEYS_MAX} the account has that many keys
  --      | {0, account} the new key's hash is taken | {1, account, {row}}
  --
  -- The caller's expiry, models and networks are the new key's where it
  -- names none.  A limit the caller has, the new key must name; it is
  -- taken from the caller's limit, and from today's room under its daily
  -- limit.

  local function key_new(k, a)
    local acct, p, c = key_caller(k, a)
    if not acct then return p end
    local cid, nid, t = ARGV[a], ARGV[a + 2], clock()
    local index, ck = p .. 'keys', key_prefix(p, ARGV[a])
    if call('HLEN', index) >= KEYS_MAX then return {-7, acct, KEYS_MAX} end
    local limit, daily, expires, models, ips =
      ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7], ARGV[a + 8]
    local carved = ''

    if c[1] or c[2] then
      local f = call('HMGET', ck, 'spent', 'day', 'day_spent')
      local held = held_sum(ck .. ':holds', ck .. ':held', t, t)
      if c[1] then
        local left = c[1] - (f[1] or 0) - held
        if limit == '' or limit + 0 > left then return {-6, acct, 1, left} end
        carved = 'l'
      end
      if c[2] then
        local left = c[2] - (f[2] == utc_day(t) and f[3] or 0) - held
        if daily == '' or daily + 0 > left then return {-6, acct, 2, left} end
        carved = carved .. 'd'
      end
    end
    if c[3] then
      if expires == '' then
        expires = c[3]
      elseif expires + 0 > c[3] + 0 then
        return {-6, acct, 3, tonumber(c[3])}
      end
    end
    if c[4] then
      if models == '' then
        models = c[4]
      elseif not models_in(models, c[4]) then
        return {-6, acct, 4, 0}
      end
    end
    if c[5] then
      if ips == '' then
        ips = c[5]
      elseif not nets_in(ips, c[5]) then
        return {-6, acct, 5, 0}
      end
    end

    if call('EXISTS', KEYS[k + 1]) == 1 then return {0, acct} end
    -- what is given is taken first: a failure there makes no key, and
    -- nothing is given that was not taken
    if c[1] and limit + 0 > 0 then
      call('HINCRBY', ck, 'limit', '-' .. limit)
    end
    if c[2] and daily + 0 > 0 then
      call('HINCRBY', ck, 'daily_limit', '-' .. daily)
    end
    call('SET', KEYS[k + 1], acct)
    local f = {'since', t, 'parent', cid}
    local v = {name = ARGV[a + 3], limit = limit, daily_limit = daily,
               expires = expires, models = models, ips = ips, carved = carved}
    for _, name in ipairs({'name', 'limit', 'daily_limit', 'expires',
                           'models', 'ips', 'carved'})
    do
      if v[name] ~= '' then f[#f + 1], f[#f + 2] = name, v[name] end
    end
    call('HSET', key_prefix(p, nid), unpack(f))
    call('HSET', index, nid, string.sub(KEYS[k + 1], 13),
         cid, string.sub(KEYS[k], 13))
    return {1, acct, {key_row(p, nid, cid, t)}}
  end

  -- A key forgotten (key id tid of the account under prefix p, its full
  -- hash sha), and what it was given and did not spend given back to the
  -- key that made it; the keys it made are that key's now.  Its live holds
  -- are counted as spent: what they settle after it is gone counts against
  -- no key, only the account.

  local function forget(p, tid, sha, t)
    local index = p .. 'keys'
    local tk = key_prefix(p, tid)
    local f = call('HMGET', tk, 'parent', 'carved', 'limit', 'spent',
                   'daily_limit', 'day', 'day_spent')
    local pk = f[1] and key_prefix(p, f[1])
    if pk and f[2] then
      local pf = call('HMGET', pk, 'limit', 'daily_limit', 'day')
      local held = held_sum(tk .. ':holds', tk .. ':held', t, t)
      if string.find(f[2], 'l', 1, true) and f[3] and pf[1] then
        local back = f[3] - (f[4] or 0) - held
        if back > 0 then call('HINCRBY', pk, 'limit', back) end
      end
      if string.find(f[2], 'd', 1, true) and f[5] and pf[2] then
        -- what it spent today, and may yet, stays spent today
        local today = utc_day(t)
        local used = (f[6] == today and f[7] or 0) + held
        call('HINCRBY', pk, 'daily_limit', f[5])
        -- a day after Redis' today (a relay's clock ahead) is left alone
        if pf[3] == today then
          call('HINCRBY', pk, 'day_spent', used)
        elseif not pf[3] or pf[3] < today then
          call('HSET', pk, 'day', today, 'day_spent', used)
        end
      end
    end

    local ids = call('HKEYS', index)
    for i = 1, #ids do
      local ik = key_prefix(p, ids[i])
      if call('HGET', ik, 'parent') == tid then
        if f[1] then call('HSET', ik, 'parent', f[1])
        else call('HDEL', ik, 'parent') end
      end
    end
    call('DEL', 'imgbill:key:' .. sha, tk, tk .. ':holds', tk .. ':held')
    call('HDEL', index, tid)
  end

  -- key_del: a key deleted by a key of its account (/v1/imgbill/keys).
  --   KEYS: imgbill:key:<sha256 of the caller's key>
  --   ARGV: the caller's id, the client's address, the id to delete
  --   -> {-1} | {-2, account, expired at} | {-4, account}: as key_new's
  --      | {-8, account} no such key, or not one the caller may delete
  --      | {1, account}

  local function key_del(k, a)
    local acct, p, c = key_caller(k, a)
    if not acct then return p end
    local cid, tid = ARGV[a], ARGV[a + 2]
    local sha = tid == cid and string.sub(KEYS[k], 13)
                or call('HGET', p .. 'keys', tid)
    if not sha or call('GET', 'imgbill:key:' .. sha) ~= acct
       or (narrow(c) and not made_by(p, tid, cid))
    then
      return {-8, acct}
    end
    forget(p, tid, sha, clock())
    return {1, acct}
  end

  -- key_drop: a key deleted by the operator (imgbill key-del), who needs
  -- no key to do it: the same give-back as key_del's.
  --   KEYS: imgbill:key:<sha256 of the key>
  --   -> {-8} no such key | {1, account}

  local function key_drop(k)
    local acct = call('GET', KEYS[k])
    if not acct then return {-8} end
    forget('imgbill:{' .. acct .. '}:', string.sub(KEYS[k], 13, 24),
           string.sub(KEYS[k], 13), clock())
    return {1, acct}
  end

  return {[4] = release_key, [5] = lookup, [6] = info, [9] = redeem,
          [10] = key_list, [11] = key_new, [12] = key_del, [13] = key_drop}
end


-- The batch: each command runs under pcall, so it keeps its own
-- atomicity and its own result, and one failing (a key of the wrong
-- type) answers that command with an error and no other.  The numbers
-- are those of ngx_http_imgbill_script_e, from 1.  A function is told
-- how many arguments it has, so that one may take more than its callers
-- of old send.

local run = {admit, settle, release, false, false, false, refresh, reverse}

-- a command's function, seldom()'s made at the first that needs them
local function fn(c)
  if not run[c] then
    for i, f in pairs(seldom()) do run[i] = f end
  end
  return run[c]
end

-- a command's head is small numbers: one digit costs no strtod()
local function small(s)
  if #s == 1 then return byte(s) - 48 end
  return tonumber(s)
end

local out, n, k, i, last = {}, 0, 1, 1, #ARGV
while i <= last do
  local nk, na = small(ARGV[i + 1]), small(ARGV[i + 2])
  local ok, r = pcall(fn(small(ARGV[i])), k, i + 3, na)
  if not ok then
    r = {err = type(r) == 'table' and r.err or tostring(r)}
  end
  n = n + 1
  out[n] = r
  k, i = k + nk, i + 3 + na
end
return out
