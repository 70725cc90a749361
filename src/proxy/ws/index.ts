export { createWsProxy, type WsProxy, type WsProxyOptions } from './proxy.js';
export type { Offered, TakeOver } from './take-over.js';
