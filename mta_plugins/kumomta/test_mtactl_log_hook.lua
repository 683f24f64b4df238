-- Runs under a plain Lua 5.4 with stand-ins for kumod's HTTP client:
--   lua5.4 mta_plugins/kumomta/test_mtactl_log_hook.lua
package.path = arg[0]:gsub('[^/]+$', '') .. '?.lua;' .. package.path
local hook = require 'mtactl_log_hook'

local function message(data)
  return { get_data = function() return data end }
end

local function client_answering(status, fail)
  local sent = {}
  local request = {}
  function request:header(name, value) sent.headers[name] = value return self end
  function request:body(body) sent.body = body return self end
  function request:send()
    if fail then error('connection refused') end
    return {
      status_code = function() return status end,
      status_reason = function() return status == 202 and 'Accepted' or 'Error' end,
      text = function() return '{"accepted":2}' end,
      status_is_success = function() return status >= 200 and status < 300 end,
    }
  end
  local client = {}
  function client:post(url) sent.url = url sent.headers = {} return request end
  return client, sent
end

local rejected
local function reject(status, why) rejected = { status = status, why = why } return nil end

-- 1. A 202 sends a JSON array of the records with the key, and succeeds.
local client, sent = client_answering(202)
local result = hook.post_batch(client, 'http://mtactl/ingest', 'mq_live_x', { message('{"a":1}'), message('{"b":2}') }, reject)
assert(sent.body == '[{"a":1},{"b":2}]', sent.body)
assert(sent.headers['Authorization'] == 'Bearer mq_live_x')
assert(sent.headers['Content-Type'] == 'application/json')
assert(result:match('^202 '), result)
assert(rejected == nil)

-- 2. Any non-2xx answer is a transient (4xx) rejection, so kumod retries.
for _, status in ipairs({ 400, 401, 500, 503 }) do
  rejected = nil
  client = client_answering(status)
  hook.post_batch(client, 'http://mtactl/ingest', 'k', { message('{}') }, reject)
  assert(rejected and rejected.status >= 400 and rejected.status < 500, 'status ' .. status)
end

-- 3. A network error is a transient rejection too.
rejected = nil
client = client_answering(202, true)
hook.post_batch(client, 'http://mtactl/ingest', 'k', { message('{}') }, reject)
assert(rejected and rejected.status == 451 and rejected.why:match('unreachable'))

-- 4. Empty records are skipped; an empty batch sends nothing.
client, sent = client_answering(202)
assert(hook.post_batch(client, 'u', 'k', { message('') }, reject):match('^250'))
assert(sent.url == nil)

print('ok')
