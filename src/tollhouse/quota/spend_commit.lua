-- Add one object's cost to the committed spend of its periods, once across all replicas:
-- the first to mark the object adds it, any later sighting finds the mark.
--
-- KEYS[1] the object's metered mark, KEYS[2] where a hold may be parked on it,
-- KEYS[3..] the periods' hashes
-- ARGV: amount (micro-dollars), mark ttl_ms, then each period's expires_at (s)
-- Returns {1 if added else 0, the parked hold ("" if none)}

local amount = tonumber(ARGV[1])
if not redis.call("SET", KEYS[1], "1", "NX", "PX", tonumber(ARGV[2])) then
  return {0, ""}
end
for i = 3, #KEYS do
  redis.call("HINCRBY", KEYS[i], "committed", amount)
  redis.call("EXPIREAT", KEYS[i], tonumber(ARGV[i]))
end
local parked = redis.call("GET", KEYS[2])
if parked then
  redis.call("DEL", KEYS[2])
  return {1, parked}
end
return {1, ""}
