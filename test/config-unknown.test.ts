// The edit distance behind "did you mean": pure, so tested on its own.
import t from 'tap';
import { closestSetting, editDistance } from '../src/config/unknown.js';

t.test('edit distance counts insertions, deletions and substitutions', async (t) => {
  t.equal(editDistance('', ''), 0);
  t.equal(editDistance('abc', ''), 3);
  t.equal(editDistance('', 'ab'), 2);
  t.equal(editDistance('BITQUERY_UPSTREM', 'BITQUERY_UPSTREAM'), 1);
  t.equal(editDistance('kitten', 'sitting'), 3);
});

t.test('the closest setting of a typo', async (t) => {
  t.equal(closestSetting('BITQUERY_UPSTREM'), 'BITQUERY_UPSTREAM');
  t.equal(closestSetting('WS_MAX_STREAM'), 'WS_MAX_STREAMS');
  t.equal(closestSetting('TOKEN_WAIT'), 'TOKEN_WAIT_MS');
});
