// quicpush browser SDK: the quicpush protocol (docs/PROTOCOL.md) over
// WebTransport, with the same per-channel guarantees as the Go SDK.
export { Client } from "./client.js";
export { Subscription } from "./session.js";
export { Message } from "./channel.js";
export { LocalStorageStore, MemoryStore, keyString } from "./state.js";
export { ClosedError, ErrorCode, NotSentError, QuicpushError, codeName, isTerminal } from "./errors.js";
export {
  FeatureCriticalCopies,
  FeatureDatagrams,
  FeatureTokenRefresh,
  FrameReader,
  MaxFrameSize,
  MaxMessageSize,
  decodeFrame,
  encodeFrame,
  encodeVarint,
  frame,
} from "./frame.js";
