-- Take a hold out of flight in each period it was reserved in; a second release is a no-op.
--
-- KEYS: for each period, its hash and its sorted set of hold deadlines
-- ARGV: hold

local hold = ARGV[1]
for i = 1, #KEYS / 2 do
  local h, z = KEYS[2 * i - 1], KEYS[2 * i]
  local held = redis.call("HGET", h, "h:" .. hold)
  if held then
    redis.call("HDEL", h, "h:" .. hold)
    redis.call("HINCRBY", h, "in_flight", -tonumber(held))
  end
  redis.call("ZREM", z, hold)
end
return 1
