export { createWsProxy, type Offered, type TakeOver, type WsProxy, type WsProxyOptions } from './proxy.js';
