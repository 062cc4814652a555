// sdk_test.mjs - tokenaudit's /v1 through the official `openai` npm SDK (v6).
//
// Run by tests/integration/test_openai_sdk.py, which starts the gateway and the
// fake upstream and passes, in the environment:
//   TA_BASE_URL      http://127.0.0.1:PORT/v1
//   TA_KEY           a key with room to spare
//   TA_KEY_EXHAUST   a key whose quota admits exactly one request
//   TA_KEY_RPM       a key with rpm = 1
// Prints one JSON line per check ({"check": name, ...facts}) and "SDK OK" at
// the end; exits 1 with the failing check on the first failure. The fake
// upstream is scripted through extra body fields (fake_usage, fake_chunks),
// which the SDK sends as they are.
import OpenAI from 'openai';

const base = process.env.TA_BASE_URL;
const key = process.env.TA_KEY;
if (!base || !key || !process.env.TA_KEY_EXHAUST || !process.env.TA_KEY_RPM) {
  console.error('TA_BASE_URL, TA_KEY, TA_KEY_EXHAUST and TA_KEY_RPM must be set');
  process.exit(2);
}

// maxRetries 0: the SDK would otherwise retry 429s and 5xx by itself.
const client = (apiKey) => new OpenAI({ apiKey, baseURL: base, maxRetries: 0, timeout: 20000 });
const ok = client(key);
const msgs = [{ role: 'user', content: 'Say hello' }];

function check(cond, what) {
  if (!cond) throw new Error('check failed: ' + what);
}
function report(name, facts) {
  console.log(JSON.stringify({ check: name, ...facts }));
}

async function expectError(name, cls, fn, code) {
  let err = null;
  try {
    await fn();
  } catch (e) {
    err = e;
  }
  check(err !== null, `${name}: the call succeeded, expected ${cls.name}`);
  check(err instanceof cls, `${name}: got ${err && err.constructor && err.constructor.name} (${err && err.status}: ${err && err.message}), expected ${cls.name}`);
  check(err instanceof OpenAI.APIError, `${name}: not an APIError`);
  if (code !== undefined)
    check(err.code === code, `${name}: error code ${err.code}, expected ${code}`);
  check(typeof err.message === 'string' && err.message.length > 0, `${name}: no message`);
  report(name, { status: err.status, code: err.code, type: err.type,
                 retry_after: err.headers ? err.headers.get('retry-after') : null,
                 request_id: err.requestID || null });
  return err;
}

async function main() {
  // ---- models.list ----------------------------------------------------------
  const ids = [];
  for await (const m of ok.models.list()) {
    check(m.object === 'model', 'model object');
    ids.push(m.id);
  }
  ids.sort();
  check(JSON.stringify(ids) === JSON.stringify(['emb-test', 'gpt-test']), 'models.list: ' + JSON.stringify(ids));
  const one = await ok.models.retrieve('gpt-test');
  check(one.id === 'gpt-test', 'models.retrieve');
  report('models', { ids });

  // ---- chat, non-streaming ---------------------------------------------------
  const { data: c, response: resp } = await ok.chat.completions
    .create({ model: 'gpt-test', messages: msgs, fake_usage: '12,5,4' })
    .withResponse();
  check(c.object === 'chat.completion', 'chat object');
  check(c.choices[0].message.role === 'assistant', 'chat role');
  check(c.choices[0].message.content === 'tok0 tok1 tok2 tok3 tok4 ', 'chat content: ' + c.choices[0].message.content);
  check(c.usage.prompt_tokens === 12 && c.usage.completion_tokens === 5, 'chat usage ' + JSON.stringify(c.usage));
  check(c.usage.prompt_tokens_details.cached_tokens === 4, 'cached tokens');
  check(resp.headers.get('x-request-id'), 'x-request-id');
  report('chat', { usage: c.usage, request_id: resp.headers.get('x-request-id') });

  // ---- streaming without include_usage -------------------------------------
  {
    const stream = await ok.chat.completions.create({ model: 'gpt-test', messages: msgs, stream: true,
                                                      fake_chunks: 4, fake_usage: '9,4,0' });
    let text = '', chunks = 0, usageChunks = 0;
    for await (const ch of stream) {
      chunks++;
      check(ch.object === 'chat.completion.chunk', 'chunk object');
      if (ch.usage) usageChunks++;
      if (ch.choices.length > 0 && ch.choices[0].delta.content) text += ch.choices[0].delta.content;
    }
    check(text === 'tok0 tok1 tok2 tok3 ', 'stream text: ' + text);
    check(usageChunks === 0, 'a client that did not ask saw ' + usageChunks + ' usage chunk(s)');
    report('stream_no_usage', { chunks, text });
  }

  // ---- streaming with include_usage ----------------------------------------
  {
    const stream = await ok.chat.completions.create({ model: 'gpt-test', messages: msgs, stream: true,
                                                      stream_options: { include_usage: true },
                                                      fake_chunks: 3, fake_usage: '9,3,2' });
    let text = '', usage = [];
    let last = null;
    for await (const ch of stream) {
      if (ch.usage) usage.push(ch.usage);
      if (ch.choices.length > 0 && ch.choices[0].delta.content) text += ch.choices[0].delta.content;
      last = ch;
    }
    check(text === 'tok0 tok1 tok2 ', 'stream text: ' + text);
    check(usage.length === 1, 'usage chunks: ' + usage.length);
    check(usage[0].prompt_tokens === 9 && usage[0].completion_tokens === 3, 'usage ' + JSON.stringify(usage[0]));
    check(last.usage && last.choices.length === 0, 'the usage chunk is the last one, with no choices');
    report('stream_usage', { usage: usage[0] });
  }

  // ---- embeddings ----------------------------------------------------------------
  {
    const e = await ok.embeddings.create({ model: 'emb-test', input: ['a', 'b'], encoding_format: 'float',
                                           fake_usage: '6,0,0' });
    check(e.object === 'list' && e.data.length === 2, 'embeddings list');
    check(Array.isArray(e.data[0].embedding) && e.data[0].embedding.length === 3, 'embedding vector');
    check(e.data[1].index === 1, 'embedding index');
    check(e.usage.prompt_tokens === 6, 'embedding usage ' + JSON.stringify(e.usage));
    report('embeddings', { n: e.data.length, usage: e.usage });
  }

  // ---- typed errors ------------------------------------------------------------------
  await expectError('bad_key', OpenAI.AuthenticationError,
                    () => client('sk-this-key-does-not-exist-000000').chat.completions.create({ model: 'gpt-test', messages: msgs }),
                    'invalid_api_key');
  await expectError('bad_key_models', OpenAI.AuthenticationError,
                    () => client('sk-this-key-does-not-exist-000000').models.list());
  await expectError('unknown_model', OpenAI.NotFoundError,
                    () => ok.chat.completions.create({ model: 'no-such-model', messages: msgs }), 'model_not_found');
  await expectError('model_outside_group', OpenAI.PermissionDeniedError,
                    () => ok.chat.completions.create({ model: 'not-in-group', messages: msgs }), 'model_not_allowed');
  await expectError('bad_request', OpenAI.BadRequestError,
                    () => ok.chat.completions.create({ model: 'gpt-test', messages: [] }));

  // exhausted quota: the first request uses the only one the period allows
  const ex = client(process.env.TA_KEY_EXHAUST);
  const first = await ex.chat.completions.create({ model: 'gpt-test', messages: msgs });
  check(first.object === 'chat.completion', 'the exhausted key\'s first request');
  const e1 = await expectError('quota_exhausted', OpenAI.RateLimitError,
                               () => ex.chat.completions.create({ model: 'gpt-test', messages: msgs }),
                               'insufficient_quota');
  check(e1.status === 429, 'status 429');

  // rate limit: rpm = 1
  const rl = client(process.env.TA_KEY_RPM);
  await rl.chat.completions.create({ model: 'gpt-test', messages: msgs });
  const e2 = await expectError('rate_limited', OpenAI.RateLimitError,
                               () => rl.chat.completions.create({ model: 'gpt-test', messages: msgs }),
                               'rate_limit_exceeded');
  check(Number(e2.headers.get('retry-after')) >= 1, 'retry-after on a rate limit: ' + e2.headers.get('retry-after'));
  check(e2.headers.get('x-ratelimit-limit-requests') === '1', 'x-ratelimit-limit-requests');

  // the upstream's own 429 reaches the SDK as RateLimitError too
  await expectError('upstream_rate_limit', OpenAI.RateLimitError,
                    () => ok.chat.completions.create({ model: 'gpt-test', messages: msgs, fake_scenario: 'rate_limit' }));
  console.log('SDK OK');
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
});
