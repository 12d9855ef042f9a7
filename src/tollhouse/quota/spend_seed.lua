-- Committed spend is at least what the ledger holds (never lowered, never added twice).
--
-- KEYS: the periods' hashes
-- ARGV: for each period, the ledger's amount (micro-dollars) and expires_at (s)

for i = 1, #KEYS do
  local amount = tonumber(ARGV[2 * i - 1])
  local committed = tonumber(redis.call("HGET", KEYS[i], "committed") or "0")
  if committed < amount then
    redis.call("HSET", KEYS[i], "committed", amount)
  end
  redis.call("EXPIREAT", KEYS[i], tonumber(ARGV[2 * i]))
end
return 1
