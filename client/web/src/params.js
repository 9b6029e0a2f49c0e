// Server-given parameters (Welcome, SessionOpened), clamped to local limits
// exactly as the Go SDK does (docs/PROTOCOL.md §9). Durations in ms.

const limits = {
  heartbeat: [1000, 120000],
  holeWait: [1, 5000],
  mergeWindow: [0, 1000],
  ackDelay: [1, 5000],
  repairBatch: [16, 10000],
};

export function defaultParams() {
  return { heartbeat: 15000, holeWait: 50, mergeWindow: 20, ackDelay: 200, repairBatch: 1000 };
}

function clamp(v, def, [lo, hi]) {
  return v === 0 ? def : Math.min(Math.max(v, lo), hi);
}

/** paramsFrom takes a Welcome's parameters; 0 means the default. */
export function paramsFrom(w) {
  const d = defaultParams();
  return {
    heartbeat: clamp(w.heartbeatMs, d.heartbeat, limits.heartbeat),
    holeWait: clamp(w.holeWaitMs, d.holeWait, limits.holeWait),
    mergeWindow: clamp(w.mergeWindowMs, d.mergeWindow, limits.mergeWindow),
    ackDelay: clamp(w.ackDelayMs, d.ackDelay, limits.ackDelay),
    repairBatch: clamp(w.repairBatch, d.repairBatch, limits.repairBatch),
  };
}

/** overrideParams applies a session's own parameters (SessionOpened); 0 keeps the connection's. */
export function overrideParams(p, o) {
  return {
    ...p,
    holeWait: clamp(o.holeWaitMs, p.holeWait, limits.holeWait),
    mergeWindow: clamp(o.mergeWindowMs, p.mergeWindow, limits.mergeWindow),
    repairBatch: clamp(o.repairBatch, p.repairBatch, limits.repairBatch),
  };
}
