--[[
mtactl log hook for KumoMTA: posts batches of log records to mtactl's
POST /api/v1/events/ingest/kumomta.

Install: copy this file next to your policy (or anywhere on kumod's Lua
package.path) and, in init.lua, at the top level (outside any event handler):

  local mtactl = require 'mtactl_log_hook'
  mtactl.setup {
    url = 'https://mtactl.internal:8080/api/v1/events/ingest/kumomta',
    -- an mtactl key with the events:ingest scope, kept out of the policy file:
    api_key = { key_data = '/opt/kumomta/etc/mtactl.key' },  -- any kumo.secrets.load source
    batch_size = 100,
  }

Delivery semantics: records wait in kumod's own queue ("mtactl.log_hook")
until mtactl answers 2xx. mtactl answers 202 only once the batch is durable.
Any other answer, or a network error, rejects the batch with a 4xx status,
which kumod treats as transient: the batch stays queued and is retried with
the queue's backoff, so nothing is dropped while mtactl is unreachable.
]]

local mod = {}

-- kumod rejects with 4xx to mean "try again later"; 5xx would drop the batch.
mod.RETRY_STATUS = 451

-- Compose the request body from already-encoded JSON records: a JSON array.
function mod.batch_body(records)
  return '[' .. table.concat(records, ',') .. ']'
end

-- Post one batch; returns the disposition string on success, otherwise
-- calls reject(status, disposition) (kumo.reject in production).
function mod.post_batch(client, url, api_key, messages, reject)
  local records = {}
  for _, message in ipairs(messages) do
    local data = message:get_data()
    if data and #data > 0 then
      table.insert(records, data)
    end
  end
  if #records == 0 then
    return '250 nothing to send'
  end

  local ok, response = pcall(function()
    return client
      :post(url)
      :header('Content-Type', 'application/json')
      :header('Authorization', 'Bearer ' .. api_key)
      :body(mod.batch_body(records))
      :send()
  end)
  if not ok then
    return reject(mod.RETRY_STATUS, 'mtactl unreachable: ' .. tostring(response))
  end

  local disposition = string.format(
    '%d %s: %s',
    response:status_code(),
    response:status_reason(),
    response:text()
  )
  if response:status_is_success() then
    return disposition
  end
  return reject(mod.RETRY_STATUS, 'mtactl refused the batch: ' .. disposition)
end

function mod.setup(options)
  local kumo = require 'kumo'
  local log_hooks = require 'policy-extras.log_hooks'
  assert(options.url, 'mtactl_log_hook: url is required')
  assert(options.api_key, 'mtactl_log_hook: api_key is required')

  log_hooks:new {
    name = options.name or 'mtactl',
    batch_size = options.batch_size or 100,
    log_parameters = options.log_parameters or {
      headers = { 'Subject', 'Message-ID' },
    },
    queue_config = options.queue_config or {
      retry_interval = '30s',
      max_retry_interval = '5m',
    },
    constructor = function(domain, tenant, campaign)
      local connection = {}
      local client = kumo.http.build_client {}
      local api_key = kumo.secrets.load(options.api_key)

      -- must be named send_batch when batch_size > 1
      function connection:send_batch(messages)
        return mod.post_batch(client, options.url, api_key, messages, kumo.reject)
      end

      function connection:close()
        client:close()
      end

      return connection
    end,
  }
end

return mod
