-- One admission against a tenant bucket and the organisation bucket, atomically.
-- The same arithmetic as tollhouse/buckets/bucket.py (take_pair), on the Redis
-- server's clock so that every replica agrees.
--
-- KEYS[1] tenant bucket, KEYS[2] organisation bucket (hashes: tokens, at, queue)
-- ARGV: tenant_rate, tenant_capacity, org_rate, org_capacity (rate 0 = no bucket),
--       max_wait, enforce_tenant (0/1), enforce_org (0/1), idle_ttl_ms,
--       spread (seconds; 0 = refused callers are not queued)
-- Returns: {allowed, wait, tenant_refused, org_refused, tenant_tokens, org_tokens, now,
--           tenant_queue, org_queue}
-- (floats as strings; a missing bucket's tokens, and a queue never used, as "-").

local t_rate, t_cap = tonumber(ARGV[1]), tonumber(ARGV[2])
local o_rate, o_cap = tonumber(ARGV[3]), tonumber(ARGV[4])
local max_wait = tonumber(ARGV[5])
local enforce_t, enforce_o = ARGV[6] == "1", ARGV[7] == "1"
local ttl = tonumber(ARGV[8])
local spread = tonumber(ARGV[9])
local NO_QUEUE = -math.huge
local EARLY = 1e-5  -- seconds: a token due this close counts as there (bucket.py: EARLY)

local clock = redis.call("TIME")
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000

local function current(key, rate, cap)
  local state = redis.call("HMGET", key, "tokens", "at", "queue")
  local tokens, at = tonumber(state[1]), tonumber(state[2])
  local queue = tonumber(state[3]) or NO_QUEUE
  if tokens == nil or at == nil then
    return cap, now, NO_QUEUE
  end
  local elapsed = now - at
  if elapsed <= 0 then
    return math.min(tokens, cap), at, queue
  end
  return math.min(cap, tokens + elapsed * rate), now, queue
end

-- returns allowed, wait, tokens_after, at, tokens_before, queue_before, queue_after
local function take(key, rate, cap)
  local tokens, at, queue = current(key, rate, cap)
  local after = tokens - 1
  local wait = 0
  if after < 0 then wait = -after / rate end
  if wait <= max_wait + EARLY then
    return true, wait, after, at, tokens, queue, queue
  end
  -- refused: the time to the next token, or one token after the last caller queued
  local retry = (1 - tokens) / rate
  local queued = queue
  if spread > 0 then
    retry = math.max(retry, math.min(queue + 1 / rate - now, spread))
    queued = now + retry
  end
  return false, retry, tokens, at, tokens, queue, queued
end

local t_ok, t_wait, t_after, t_at, t_before, t_queue, t_queued = true, 0, nil, nil, nil, nil, nil
local o_ok, o_wait, o_after, o_at, o_before, o_queue, o_queued = true, 0, nil, nil, nil, nil, nil
if t_rate > 0 then
  t_ok, t_wait, t_after, t_at, t_before, t_queue, t_queued = take(KEYS[1], t_rate, t_cap)
end
if o_rate > 0 then
  o_ok, o_wait, o_after, o_at, o_before, o_queue, o_queued = take(KEYS[2], o_rate, o_cap)
end

local t_blocks, o_blocks = (not t_ok) and enforce_t, (not o_ok) and enforce_o
local blocked = t_blocks or o_blocks
local wait = 0
local t_tokens, o_tokens = t_before, o_before
if blocked then
  -- only the buckets that block the caller queue it
  if t_blocks then wait, t_queue = math.max(wait, t_wait), t_queued end
  if o_blocks then wait, o_queue = math.max(wait, o_wait), o_queued end
else
  if t_ok then wait = math.max(wait, t_wait) end
  if o_ok then wait = math.max(wait, o_wait) end
  t_tokens, o_tokens = t_after, o_after
end

-- every digit a double has (tostring keeps 14: a tenth of a millisecond of server time)
local function num(value)
  return string.format("%.17g", value)
end

local function store(key, tokens, at, queue)
  if tokens == nil then return end
  if queue > NO_QUEUE then
    redis.call("HSET", key, "tokens", num(tokens), "at", num(at), "queue", num(queue))
  else
    redis.call("HSET", key, "tokens", num(tokens), "at", num(at))
  end
  redis.call("PEXPIRE", key, ttl)
end
store(KEYS[1], t_tokens, t_at, t_queue)
store(KEYS[2], o_tokens, o_at, o_queue)

local function show(value)
  if value == nil or value == NO_QUEUE then return "-" end
  return num(value)
end
return {
  blocked and 0 or 1,
  num(wait),
  (not t_ok) and 1 or 0,
  (not o_ok) and 1 or 0,
  show(t_tokens),
  show(o_tokens),
  num(now),
  show(t_queue),
  show(o_queue),
}
