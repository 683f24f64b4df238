--[[
mtactl suppression policy for KumoMTA: refuses recipients on mtactl's
suppression list when a message is received, from a copy of the list cached
in kumod and refreshed on an interval. KumoMTA has no per-recipient admin
call, so this snippet is how mtactl's list reaches it.

Install: copy this file next to your policy (or anywhere on kumod's Lua
package.path) and, in init.lua, at the top level:

  local suppression = require 'mtactl_suppression'
  suppression.setup {
    url = 'https://mtactl.internal:8080/api/v1/suppressions/export?format=kumomta',
    -- an mtactl key with the events:ingest (or suppression:manage) scope:
    api_key = { key_data = '/opt/kumomta/etc/mtactl.key' },  -- any kumo.secrets.load source
    refresh_seconds = 60,      -- how often the copy is read again
    max_stale_seconds = 900,   -- a copy older than this is not used
    fail = 'open',             -- no usable copy: 'open' accepts, 'closed' answers 451 (the sender retries)
  }

What it refuses:
  * a global entry: at RCPT TO (smtp_server_rcpt_to), 550 5.7.1 for that
    recipient alone; the transaction's other recipients go on;
  * a tenant's entry: once the message's tenant is known
    (smtp_server_message_received, meta 'tenant'), 550 5.7.1 for that message.
    Call setup after the handler that sets the tenant, or set it earlier.
An entry stops applying at its expiry time (the list carries it) even
between two refreshes.

The list (GET /api/v1/suppressions/export?format=kumomta): a first line
starting with '#', then one line per entry: email TAB tenant TAB expires,
tenant empty for a global entry (%, tab, CR and LF in it as %25 %09 %0D %0A),
expires in Unix seconds or empty. Each kumod Lua context keeps its own copy.
]]

local mod = {}

mod.REJECT_STATUS = 550
mod.RETRY_STATUS = 451

local function unescape(text)
  return (text:gsub('%%(%x%x)', function(hex) return string.char(tonumber(hex, 16)) end))
end

-- The list's text -> { global = {email = expires|false}, tenants = {tenant = {email = expires|false}} }.
-- Returns nil and a reason when the text is not mtactl's list.
function mod.parse(text)
  if type(text) ~= 'string' or text:sub(1, 1) ~= '#' then
    return nil, 'not an mtactl suppression list'
  end
  local list = { global = {}, tenants = {} }
  for line in text:gmatch('[^\n]+') do
    if line:sub(1, 1) ~= '#' then
      local email, tenant, expires = line:match('^([^\t]+)\t([^\t]*)\t([^\t]*)$')
      if email then
        local until_time = tonumber(expires) or false
        if tenant == '' then
          list.global[email] = until_time
        else
          tenant = unescape(tenant)
          list.tenants[tenant] = list.tenants[tenant] or {}
          list.tenants[tenant][email] = until_time
        end
      end
    end
  end
  return list
end

-- mtactl keeps local parts as written and domains in lower case.
function mod.normalize(user, domain)
  return user .. '@' .. string.lower(domain)
end

local function applies(expires, now)
  return expires ~= nil and (expires == false or expires > now)
end

-- A cache: fetch() -> status, body (raises on a network error). now() -> Unix seconds.
function mod.new_cache(options, fetch, now)
  local cache = {
    list = nil,
    loaded_at = nil,
    tried_at = nil,
    refresh = options.refresh_seconds or 60,
    max_stale = options.max_stale_seconds or 900,
    fail = options.fail or 'open',
    fetch = fetch,
    now = now or os.time,
    last_error = nil,
  }

  -- The list to use now (refreshed when due), or nil when there is none fresh enough.
  function cache:current()
    local t = self.now()
    if self.tried_at == nil or t - self.tried_at >= self.refresh then
      self.tried_at = t
      local ok, status, body = pcall(self.fetch)
      if ok and status == 200 then
        local list, why = mod.parse(body)
        if list then
          self.list, self.loaded_at, self.last_error = list, t, nil
        else
          self.last_error = why
        end
      else
        self.last_error = ok and ('mtactl answered ' .. tostring(status)) or tostring(status)
      end
    end
    if self.list ~= nil and t - self.loaded_at <= self.max_stale then
      return self.list
    end
    return nil
  end

  -- 'suppressed', 'unknown' (no usable copy) or nil; tenant nil: global entries only.
  function cache:verdict(email, tenant)
    local list = self:current()
    if list == nil then
      return 'unknown'
    end
    local t = self.now()
    if applies(list.global[email], t) then
      return 'suppressed'
    end
    if tenant ~= nil and list.tenants[tenant] ~= nil and applies(list.tenants[tenant][email], t) then
      return 'suppressed'
    end
    return nil
  end

  -- Refuse through reject(status, text) when the address may not receive mail.
  function cache:enforce(email, tenant, reject)
    local verdict = self:verdict(email, tenant)
    if verdict == 'suppressed' then
      return reject(mod.REJECT_STATUS, '5.7.1 <' .. email .. '> is on the suppression list')
    end
    if verdict == 'unknown' and self.fail == 'closed' then
      return reject(mod.RETRY_STATUS, '4.3.0 suppression list unavailable, try again later')
    end
    return nil
  end

  return cache
end

function mod.setup(options)
  local client = kumo.http.build_client {}
  local api_key = kumo.secrets.load(options.api_key)
  local function fetch()
    local response = client:get(options.url):header('Authorization', 'Bearer ' .. api_key):send()
    return response:status_code(), response:text()
  end
  local cache = mod.new_cache(options, fetch)
  mod.cache = cache

  kumo.on('smtp_server_rcpt_to', function(recipient, conn_meta)
    cache:enforce(mod.normalize(recipient.user, recipient.domain), nil, kumo.reject)
  end)

  kumo.on('smtp_server_message_received', function(msg, conn_meta)
    local tenant = msg:get_meta('tenant')
    if tenant ~= nil then
      local recipient = msg:recipient()
      cache:enforce(mod.normalize(recipient.user, recipient.domain), tenant, kumo.reject)
    end
  end)
  return cache
end

return mod
