// redactUrl in-process: no secret-looking query parameter's value survives, whatever its spelling.
import t from 'tap';
import fc from 'fast-check';
import { redactUrl } from '../src/log.js';

t.test('secret parameters lose their values; the rest of the URL is kept as sent', async (t) => {
  t.equal(redactUrl('/graphql'), '/graphql');
  t.equal(redactUrl('/graphql?token=abc&network=eth'), '/graphql?token=[REDACTED]&network=eth');
  t.equal(redactUrl('/g?%74oken=abc&API-KEY=k&api_key=k2&Client_Secret=s&x=token'), '/g?%74oken=[REDACTED]&API-KEY=[REDACTED]&api_key=[REDACTED]&Client_Secret=[REDACTED]&x=token');
  t.equal(redactUrl('/g?key'), '/g?key=[REDACTED]', 'a bare name');
  t.equal(redactUrl('/g?%E0%A4%A=1&auth=a'), '/g?%E0%A4%A=1&auth=[REDACTED]', 'a malformed escape does not stop the rest');
});

const SECRET_NAMES = ['token', 'access_token', 'apikey', 'api_key', 'api-key', 'key', 'secret', 'client_secret', 'auth', 'authorization'];

/** A name spelled as a client might: any case, some characters percent-encoded, spaces as +. */
const spelled = (name: string) =>
  fc.array(fc.boolean(), { minLength: name.length, maxLength: name.length }).chain((upper) =>
    fc.array(fc.boolean(), { minLength: name.length, maxLength: name.length }).map((encode) =>
      [...name].map((c, i) => (encode[i] ? `%${c.charCodeAt(0).toString(16).padStart(2, '0')}` : upper[i] ? c.toUpperCase() : c)).join(''),
    ),
  );

t.test('property: no generated query string keeps the value of a secret parameter', async () => {
  const secret = fc.stringMatching(/^[A-Za-z0-9._~-]{8,24}$/);
  const other = fc.tuple(fc.stringMatching(/^[a-z]{1,8}$/).filter((n) => !SECRET_NAMES.includes(n)), fc.stringMatching(/^[a-z0-9]{0,8}$/));
  fc.assert(
    fc.property(fc.constantFrom(...SECRET_NAMES).chain(spelled), secret, fc.array(other, { maxLength: 5 }), fc.nat(5), (name, value, others, at) => {
      const pairs = others.map(([k, v]) => `${k}=${v}`);
      pairs.splice(Math.min(at, pairs.length), 0, `${name}=${value}`);
      const redacted = redactUrl(`/graphql?${pairs.join('&')}`);
      return !redacted.includes(value) && redacted.includes(`${name}=[REDACTED]`);
    }),
  );
});
