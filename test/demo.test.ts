// The README's first command ends in `npm run demo`: the demo must start and print a curl
// command that works against the bundled fake Bitquery.
import t from 'tap';
import { spawn } from 'node:child_process';
import { resolve } from 'node:path';
import { request } from 'undici';
import { waitFor } from './helpers/proxy-process.js';

t.test('npm run demo prints a curl command that works', async (t) => {
  const demo = spawn(process.execPath, ['--import', 'tsx', resolve(import.meta.dirname, '../scripts/demo.ts')], {
    env: { ...process.env, PORT: '0' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  demo.stdout.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  const exited = new Promise<number | null>((done) => demo.on('exit', done));
  t.teardown(() => demo.kill('SIGINT'));

  const curl = await waitFor(() => /curl -s (\S+) -H '([^']+)' -d '([^']+)'/.exec(out), 60_000, 'the curl line');
  const [, url, header, body] = curl as RegExpExecArray;
  const [name, value] = header!.split(': ');
  const res = await request(url!, { method: 'POST', headers: { [name!]: value! }, body });
  t.equal(res.statusCode, 200);
  t.match(await res.body.json(), { data: { echo: { query: '{ hello }' } } });

  demo.kill('SIGINT');
  t.equal(await exited, 0, 'Ctrl-C stops the demo cleanly');
});
