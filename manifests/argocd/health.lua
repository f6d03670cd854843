-- Argo CD health of pythanos.io PrometheusHA and ThanosCluster (one script for both kinds).
-- Order: the operator must have observed the current generation first (else the status describes an
-- older spec), then the Ready condition decides:
--   True                                                   -> Healthy
--   False, pods still coming (SomePodsNotReady, NoPodReady,
--   WorkloadNotFound, HashringEmpty,
--   HashringBelowReplicationFactor) or Unknown             -> Progressing
--   False, anything else (ReconcileFailed, ExternalLabelsConflict,
--   ObjectStorageSecretMissing, ThanosClusterNotFound, ...) -> Degraded
local hs = {status = "Progressing", message = "Waiting for the pythanos operator"}
if obj.status == nil then
  return hs
end
local generation = 0
if obj.metadata ~= nil and obj.metadata.generation ~= nil then
  generation = obj.metadata.generation
end
local observed = obj.status.observedGeneration
if observed == nil or observed < generation then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end
local progressing = {SomePodsNotReady = true, NoPodReady = true, WorkloadNotFound = true, Pending = true,
                     HashringEmpty = true, HashringBelowReplicationFactor = true}
if obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    if c.type == "Ready" then
      if c.status == "True" then
        hs.status = "Healthy"
      elseif c.status == "False" and not progressing[c.reason] then
        hs.status = "Degraded"
      else
        hs.status = "Progressing"
      end
      if c.message ~= nil and c.message ~= "" then
        hs.message = c.message
      elseif c.reason ~= nil then
        hs.message = c.reason
      end
      return hs
    end
  end
end
return hs
