// One setting of V8's garbage collector, made before any request is served: cli.ts imports this
// module right after the Node.js check.
//
// V8 allocates the objects of a code site straight into the old generation ("pretenuring") once
// most of them are seen to survive a young-generation collection. Under load, the sites of
// Node's and undici's HTTP parsers qualify: a request's objects are alive while it is in flight,
// which is often when a young collection comes. Yet they die soon after, so the old generation
// fills with garbage that only full collections reclaim, and every young collection must scan
// it. Without pretenuring those objects die young, as they should. The effect on CPU and on
// collection times is measured in the README ("Benchmarks").
import { setFlagsFromString } from 'node:v8';

setFlagsFromString('--no-allocation-site-pretenuring');
