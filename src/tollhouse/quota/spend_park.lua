-- Keep a hold in flight until the object it created has its cost committed.
--
-- KEYS[1] the object's metered mark, KEYS[2] where a hold parks on the object
-- ARGV: the hold and its period keys (newline-separated), ttl_ms
-- Returns 1 when parked, 0 when the object's cost is already in (release the hold).

if redis.call("EXISTS", KEYS[1]) == 1 then
  return 0
end
redis.call("SET", KEYS[2], ARGV[1], "PX", tonumber(ARGV[2]))
return 1
