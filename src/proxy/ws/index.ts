export { createWsProxy, type Handshake, type TakeOver, type WsProxy, type WsProxyOptions } from './proxy.js';
