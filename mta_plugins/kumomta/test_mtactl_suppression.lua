-- Runs under a plain Lua 5.4 with stand-ins for kumod's API:
--   lua5.4 mta_plugins/kumomta/test_mtactl_suppression.lua
package.path = arg[0]:gsub('[^/]+$', '') .. '?.lua;' .. package.path
local suppression = require 'mtactl_suppression'

local LIST = '# mtactl suppressions v1\n'
  .. 'gone@example.com\t\t\n'
  .. 'Bob@yahoo.com\tacme\t\n'
  .. 'brief@example.com\t\t1000\n'
  .. 'odd@example.com\tten%09ant\t\n'

local clock = 0
local fetches = 0
local answer = { 200, LIST }
local function fetch()
  fetches = fetches + 1
  if answer == 'down' then error('connection refused') end
  return answer[1], answer[2]
end
local function now() return clock end

local rejected
local function reject(status, text) rejected = { status = status, text = text } end
local function check(cache, email, tenant)
  rejected = nil
  cache:enforce(email, tenant, reject)
  return rejected and rejected.status or nil
end

-- stand-ins for kumod: kumo.on, kumo.reject (raises, as kumod's does), the HTTP client, secrets
local handlers = {}
kumo = {
  on = function(name, fn) handlers[name] = fn end,
  reject = function(status, text) error({ status = status, text = text }) end,
  secrets = { load = function(source) return 'mq_live_test' end },
  http = {
    build_client = function()
      local client = {}
      function client:get(url)
        local request = { url = url, headers = {} }
        function request:header(k, v) self.headers[k] = v return self end
        function request:send()
          assert(self.headers.Authorization == 'Bearer mq_live_test', 'the key is sent')
          return { status_code = function() return 200 end, text = function() return LIST end }
        end
        return request
      end
      return client
    end,
  },
}

-- the list's format
local list = assert(suppression.parse(LIST))
assert(list.global['gone@example.com'] == false and list.global['brief@example.com'] == 1000)
assert(list.tenants.acme['Bob@yahoo.com'] == false and list.tenants['ten\tant']['odd@example.com'] == false)
assert(suppression.parse('<html>') == nil, 'anything else is not a list')
assert(suppression.normalize('Bob', 'YAHOO.com') == 'Bob@yahoo.com')

-- global entries refuse everyone; tenant entries only that tenant's messages; expiry applies between refreshes
local cache = suppression.new_cache({ refresh_seconds = 60, max_stale_seconds = 300 }, fetch, now)
assert(check(cache, 'gone@example.com', nil) == 550)
assert(check(cache, 'fine@example.com', nil) == nil)
assert(check(cache, 'Bob@yahoo.com', nil) == nil and check(cache, 'Bob@yahoo.com', 'beta') == nil)
assert(check(cache, 'Bob@yahoo.com', 'acme') == 550)
assert(check(cache, 'brief@example.com', nil) == 550)
clock = 1000
assert(check(cache, 'brief@example.com', nil) == nil, 'expired at 1000')

-- refreshed on the interval, not per recipient
fetches = 0
clock = 1010
check(cache, 'gone@example.com', nil)
assert(fetches == 0)
clock = 1060
check(cache, 'gone@example.com', nil)
assert(fetches == 1)

-- mtactl away: the last copy is used until it is too old, then the fail mode decides
answer = 'down'
clock = 1200
assert(check(cache, 'gone@example.com', nil) == 550, 'last copy still used')
clock = 1400
assert(check(cache, 'gone@example.com', nil) == nil, 'fails open')
assert(cache.last_error ~= nil)
local closed = suppression.new_cache({ fail = 'closed' }, fetch, now)
assert(check(closed, 'anyone@example.com', nil) == 451, 'fails closed with a temporary refusal')
answer = { 401, '{"error":"unauthenticated"}' }
local refused = suppression.new_cache({ fail = 'closed' }, fetch, now)
assert(check(refused, 'anyone@example.com', nil) == 451 and refused.last_error == 'mtactl answered 401')

-- wired into kumod's events
suppression.setup { url = 'http://mtactl.test/api/v1/suppressions/export?format=kumomta', api_key = {} }
local ok, err = pcall(handlers.smtp_server_rcpt_to, { user = 'gone', domain = 'EXAMPLE.com' }, {})
assert(not ok and err.status == 550, 'rcpt refused')
assert(pcall(handlers.smtp_server_rcpt_to, { user = 'Bob', domain = 'yahoo.com' }, {}), 'tenant entry: not at rcpt')
local function message(tenant)
  return {
    get_meta = function(_, key) if key == 'tenant' then return tenant end end,
    recipient = function() return { user = 'Bob', domain = 'yahoo.com' } end,
  }
end
ok, err = pcall(handlers.smtp_server_message_received, message('acme'), {})
assert(not ok and err.status == 550, 'the tenant message refused')
assert(pcall(handlers.smtp_server_message_received, message('beta'), {}), 'another tenant passes')

print('ok')
