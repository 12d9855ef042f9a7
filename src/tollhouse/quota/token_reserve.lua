-- A reservation of an estimated number of tokens from a tenant bucket and the
-- organisation bucket, atomically: from both or from neither. The same arithmetic
-- as tollhouse/buckets/reserve.py (reserve_pair), on the Redis server's clock.
--
-- KEYS[1] tenant bucket, KEYS[2] organisation bucket (hashes: tokens, at),
-- KEYS[3] the reservation, kept until it is settled or its time is up
-- ARGV: tenant_rate, tenant_capacity, org_rate, org_capacity (rate 0 = no bucket),
--       amount, enforce_tenant (0/1), enforce_org (0/1), idle_ttl_ms,
--       reservation_ttl_ms, early (seconds: a token due this close counts as there)
-- Returns: {allowed, wait, tenant_refused, org_refused, tenant_tokens, org_tokens, now,
--           tenant_taken, org_taken}
-- (floats as strings; a missing bucket's tokens as "-"; a wait that never ends as "inf").

local t_rate, t_cap = tonumber(ARGV[1]), tonumber(ARGV[2])
local o_rate, o_cap = tonumber(ARGV[3]), tonumber(ARGV[4])
local amount = tonumber(ARGV[5])
local enforce_t, enforce_o = ARGV[6] == "1", ARGV[7] == "1"
local ttl, reservation_ttl = tonumber(ARGV[8]), tonumber(ARGV[9])
local early = tonumber(ARGV[10])

local clock = redis.call("TIME")
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000

local function num(value)
  return string.format("%.17g", value)
end

local function current(key, rate, cap)
  local state = redis.call("HMGET", key, "tokens", "at")
  local tokens, at = tonumber(state[1]), tonumber(state[2])
  if tokens == nil or at == nil then
    return cap, now
  end
  local elapsed = now - at
  if elapsed <= 0 then
    return math.min(tokens, cap), at
  end
  return math.min(cap, tokens + elapsed * rate), now
end

-- returns allowed, wait (-1: never), tokens now, at
local function draw(key, rate, cap)
  local tokens, at = current(key, rate, cap)
  if amount > cap then return false, -1, tokens, at end
  local short = (amount - tokens) / rate
  if short <= early then return true, 0, tokens, at end
  return false, short, tokens, at
end

local t_ok, t_wait, t_tokens, t_at = true, 0, nil, nil
local o_ok, o_wait, o_tokens, o_at = true, 0, nil, nil
if t_rate > 0 then t_ok, t_wait, t_tokens, t_at = draw(KEYS[1], t_rate, t_cap) end
if o_rate > 0 then o_ok, o_wait, o_tokens, o_at = draw(KEYS[2], o_rate, o_cap) end

local t_blocks, o_blocks = (not t_ok) and enforce_t, (not o_ok) and enforce_o
local function show(value)
  if value == nil then return "-" end
  return num(value)
end

if t_blocks or o_blocks then
  local wait = 0
  for _, pair in ipairs({{t_blocks, t_wait}, {o_blocks, o_wait}}) do
    if pair[1] then
      if pair[2] < 0 or wait < 0 then wait = -1 else wait = math.max(wait, pair[2]) end
    end
  end
  local shown = wait < 0 and "inf" or num(wait)
  return {0, shown, t_ok and 0 or 1, o_ok and 0 or 1, show(t_tokens), show(o_tokens),
    num(now), 0, 0}
end

local t_taken, o_taken = 0, 0
local function store(key, tokens, at)
  redis.call("HSET", key, "tokens", num(tokens), "at", num(at))
  redis.call("PEXPIRE", key, ttl)
end
if t_rate > 0 and t_ok then
  t_tokens, t_taken = t_tokens - amount, amount
  store(KEYS[1], t_tokens, t_at)
end
if o_rate > 0 and o_ok then
  o_tokens, o_taken = o_tokens - amount, amount
  store(KEYS[2], o_tokens, o_at)
end
redis.call("SET", KEYS[3], "1", "PX", reservation_ttl)
return {1, "0", t_ok and 0 or 1, o_ok and 0 or 1, show(t_tokens), show(o_tokens), num(now),
  t_taken, o_taken}
