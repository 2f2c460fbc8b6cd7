-- wrk script for benches/load.sh with SESSIONS > 1: each request carries the next cookie of
-- the file named by COOKIES (one `name=value` a line), round robin.
local cookies = {}
for line in io.lines(os.getenv("COOKIES")) do
  cookies[#cookies + 1] = line
end
local next_cookie = 0

request = function()
  next_cookie = next_cookie % #cookies + 1
  return wrk.format("GET", "/", { ["Cookie"] = cookies[next_cookie] })
end
