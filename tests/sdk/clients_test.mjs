// clients_test.mjs - the gateway through the client libraries people point at
// it: the official `openai` SDK (Responses API plain, streamed, with tools and
// through its stream helper; chat with a tool call; embeddings in the SDK's
// default base64 encoding), the Vercel AI SDK (`ai` + `@ai-sdk/openai`, whose
// default provider speaks the Responses API: generateText, streamText) and
// `@anthropic-ai/sdk` (messages.create, messages.stream, countTokens), each
// against a model served by an openai-type and by an anthropic-type provider.
//
// Run by tests/integration/test_client_sdks.py, which passes:
//   TA_BASE_URL  http://127.0.0.1:PORT/v1 (the gateway)
//   TA_KEY       an API key whose group holds gpt-test (openai route),
//                claude-test (anthropic route) and emb-test (embeddings)
//   TA_FAKE_URL  http://127.0.0.1:PORT (the fake upstream, scripted per call)
// Before each call the fake is scripted with a usage no other call has; the
// call's line ({"check", "endpoint", "charged": [prompt, completion, cached,
// cache_write]}) says what the gateway must have recorded for it, and the
// Python side finds that record and checks its cost to the nano-unit. Prints
// "CLIENTS OK" at the end; exits 1 with the failing check on the first failure.
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { generateText, streamText } from 'ai';
import { createOpenAI } from '@ai-sdk/openai';

const base = process.env.TA_BASE_URL;
const key = process.env.TA_KEY;
const fakeUrl = process.env.TA_FAKE_URL;
if (!base || !key || !fakeUrl) {
  console.error('TA_BASE_URL, TA_KEY and TA_FAKE_URL must be set');
  process.exit(2);
}

const oai = new OpenAI({ apiKey: key, baseURL: base, maxRetries: 0, timeout: 20000 });
const anth = new Anthropic({ apiKey: key, baseURL: base.replace(/\/v1$/, ''), maxRetries: 0, timeout: 20000 });
const vercel = createOpenAI({ apiKey: key, baseURL: base });
const TOOLS = [{ type: 'function', name: 'get_weather', description: 'Weather in a city', strict: false,
                 parameters: { type: 'object', properties: { city: { type: 'string' } } } }];
const TEXT = 'tok0 tok1 tok2 tok3 tok4 ';

function check(cond, what) {
  if (!cond) throw new Error('check failed: ' + what);
}

// The fake's next request answers with this scenario and usage ("p,c,k[,w]").
async function script(usage, scenario = 'ok') {
  const r = await fetch(fakeUrl + '/_fake/control', { method: 'POST',
    body: JSON.stringify({ scenario, usage, times: 1 }) });
  check(r.ok, 'fake control');
}

// charged: what the audit record must say (prompt counts cached and written tokens)
function report(name, endpoint, charged, facts = {}) {
  console.log(JSON.stringify({ check: name, endpoint, charged, ...facts }));
}

function textOf(resp) {
  return resp.output.filter((o) => o.type === 'message')
    .flatMap((o) => o.content).map((p) => p.text || '').join('');
}

async function openaiResponses() {
  for (const [model, usage, charged] of [['gpt-test', '21,7,5', [21, 7, 5, 0]],
                                         ['claude-test', '24,6,3,2', [29, 6, 3, 2]]]) {
    await script(usage);
    const r = await oai.responses.create({ model, input: 'Say hello', instructions: 'Be brief.',
                                           max_output_tokens: 64 });
    check(r.object === 'response' && r.status === 'completed', `${model} response: ${JSON.stringify(r)}`);
    check(r.output_text === TEXT, `${model} output_text: ${r.output_text}`);
    check(r.usage.input_tokens === charged[0] && r.usage.output_tokens === charged[1] &&
          r.usage.input_tokens_details.cached_tokens === charged[2], `${model} usage ${JSON.stringify(r.usage)}`);
    report(`openai.responses.create ${model}`, 'responses', charged, { id: r.id });
  }

  for (const [model, usage, charged] of [['gpt-test', '22,5,6', [22, 5, 6, 0]],
                                         ['claude-test', '25,5,0,1', [26, 5, 0, 1]]]) {
    await script(usage);
    const stream = await oai.responses.create({ model, input: 'Say hello', stream: true });
    let text = '', done = null, types = [];
    for await (const ev of stream) {
      types.push(ev.type);
      if (ev.type === 'response.output_text.delta') text += ev.delta;
      if (ev.type === 'response.completed') done = ev.response;
    }
    check(types[0] === 'response.created' && types.at(-1) === 'response.completed', `${model} events ${types}`);
    check(text === TEXT && done && done.usage.input_tokens === charged[0] && done.usage.output_tokens === charged[1],
          `${model} stream: ${text} ${JSON.stringify(done && done.usage)}`);
    report(`openai.responses.create stream ${model}`, 'responses', charged, { events: types.length });
  }

  // the SDK's own stream helper accumulates the events into a Response
  for (const [model, usage, charged] of [['gpt-test', '20,5,1', [20, 5, 1, 0]],
                                         ['claude-test', '19,5,2,0', [21, 5, 2, 0]]]) {
    await script(usage);
    const final = await oai.responses.stream({ model, input: 'Say hello' }).finalResponse();
    check(final.output_text === TEXT && final.usage.output_tokens === 5, `${model} finalResponse ${JSON.stringify(final)}`);
    report(`openai.responses.stream ${model}`, 'responses', charged);
  }

  for (const [model, usage, charged] of [['gpt-test', '23,4,0', [23, 4, 0, 0]],
                                         ['claude-test', '26,3,0', [26, 3, 0, 0]]]) {
    await script(usage, 'tool_use');
    const r = await oai.responses.create({ model, input: 'Weather in Oslo?', tools: TOOLS });
    const calls = r.output.filter((o) => o.type === 'function_call');
    check(calls.length === 1 && calls[0].name === 'get_weather' && JSON.parse(calls[0].arguments).city === 'Oslo',
          `${model} function call: ${JSON.stringify(r.output)}`);
    // the call's output goes back as the next turn's input
    await script(usage.replace(/^(\d+)/, (m) => String(Number(m) + 100)));
    const r2 = await oai.responses.create({ model, tools: TOOLS, input: [
      { role: 'user', content: 'Weather in Oslo?' }, calls[0],
      { type: 'function_call_output', call_id: calls[0].call_id, output: 'sunny' }] });
    check(r2.output_text === TEXT, `${model} after the tool output: ${r2.output_text}`);
    report(`openai.responses.create tools ${model}`, 'responses', charged);
    report(`openai.responses.create tool output ${model}`, 'responses', [charged[0] + 100, ...charged.slice(1)]);
  }
}

async function openaiChatAndEmbeddings() {
  await script('27,4,0', 'tool_use');
  const c = await oai.chat.completions.create({ model: 'gpt-test', messages: [{ role: 'user', content: 'Weather?' }],
    tools: [{ type: 'function', function: { name: 'get_weather', parameters: TOOLS[0].parameters } }] });
  const tc = c.choices[0].message.tool_calls;
  check(c.choices[0].finish_reason === 'tool_calls' && tc.length === 1 && tc[0].function.name === 'get_weather' &&
        JSON.parse(tc[0].function.arguments).city === 'Oslo', `chat tool call: ${JSON.stringify(c.choices[0])}`);
  report('openai.chat.completions tools', 'chat.completions', [27, 4, 0, 0]);

  await script('28,4,0', 'tool_use');
  const stream = await oai.chat.completions.create({ model: 'gpt-test', stream: true,
    messages: [{ role: 'user', content: 'Weather?' }],
    tools: [{ type: 'function', function: { name: 'get_weather', parameters: TOOLS[0].parameters } }] });
  let args = '', name = '', finish = '';
  for await (const ch of stream) {
    const d = ch.choices[0] && ch.choices[0].delta;
    for (const t of (d && d.tool_calls) || []) {
      if (t.function && t.function.name) name = t.function.name;
      if (t.function && t.function.arguments) args += t.function.arguments;
    }
    if (ch.choices[0] && ch.choices[0].finish_reason) finish = ch.choices[0].finish_reason;
  }
  check(name === 'get_weather' && JSON.parse(args).city === 'Oslo' && finish === 'tool_calls',
        `chat tool stream: ${name} ${args} ${finish}`);
  report('openai.chat.completions tools stream', 'chat.completions', [28, 4, 0, 0]);

  // no encoding_format: the SDK asks for base64 and decodes it
  await script('8,0,0');
  const e = await oai.embeddings.create({ model: 'emb-test', input: ['a', 'b'] });
  check(e.data.length === 2 && JSON.stringify(e.data[0].embedding) === JSON.stringify([0.125, -0.25, 0.5]),
        `base64 embeddings decoded: ${JSON.stringify(e.data)}`);
  report('openai.embeddings base64', 'embeddings', [8, 0, 0, 0]);
}

async function vercelAi() {
  for (const [model, usage, charged] of [['gpt-test', '31,6,2', [31, 6, 2, 0]],
                                         ['claude-test', '33,4,1,0', [34, 4, 1, 0]]]) {
    await script(usage);
    const r = await generateText({ model: vercel(model), prompt: 'Say hello', system: 'Be brief.', maxRetries: 0 });
    check(r.text === TEXT, `${model} generateText: ${r.text}`);
    check(r.usage.inputTokens === charged[0] && r.usage.outputTokens === charged[1] &&
          r.usage.inputTokenDetails.cacheReadTokens === charged[2], `${model} usage ${JSON.stringify(r.usage)}`);
    report(`ai.generateText ${model}`, 'responses', charged);
  }
  for (const [model, usage, charged] of [['gpt-test', '32,5,0', [32, 5, 0, 0]],
                                         ['claude-test', '34,5,0,0', [34, 5, 0, 0]]]) {
    await script(usage);
    const errors = [];
    const r = streamText({ model: vercel(model), prompt: 'Say hello', maxRetries: 0,
                           onError: ({ error }) => errors.push(error) });
    let text = '';
    for await (const t of r.textStream) text += t;
    const u = await r.usage;
    check(errors.length === 0, `${model} streamText errors: ${errors}`);
    check(text === TEXT && u.inputTokens === charged[0] && u.outputTokens === charged[1],
          `${model} streamText: ${text} ${JSON.stringify(u)}`);
    report(`ai.streamText ${model}`, 'responses', charged);
  }
}

async function anthropicSdk() {
  const messages = [{ role: 'user', content: 'Say hello' }];
  for (const [model, usage, charged] of [['claude-test', '41,6,2,1', [44, 6, 2, 1]],
                                         ['gpt-test', '43,7,3', [43, 7, 3, 0]]]) {
    await script(usage);
    const m = await anth.messages.create({ model, max_tokens: 64, system: 'Be brief.', messages });
    check(m.type === 'message' && m.content[0].text === TEXT && m.stop_reason === 'end_turn',
          `${model} message: ${JSON.stringify(m)}`);
    check(m.usage.output_tokens === charged[1] && m.usage.cache_read_input_tokens === charged[2],
          `${model} usage ${JSON.stringify(m.usage)}`);
    report(`anthropic.messages.create ${model}`, 'messages', charged);
  }
  for (const [model, usage, charged] of [['claude-test', '42,5,0,0', [42, 5, 0, 0]],
                                         ['gpt-test', '44,5,0', [44, 5, 0, 0]]]) {
    await script(usage);
    const s = anth.messages.stream({ model, max_tokens: 64, messages });
    let text = '';
    s.on('text', (t) => { text += t; });
    const m = await s.finalMessage();
    check(text === TEXT && m.content[0].text === TEXT && m.usage.output_tokens === 5,
          `${model} stream: ${text} ${JSON.stringify(m)}`);
    report(`anthropic.messages.stream ${model}`, 'messages', charged);
  }
  await script('45,1,0');
  const ct = await anth.messages.countTokens({ model: 'claude-test', messages });
  check(ct.input_tokens === 45, `countTokens passed through: ${JSON.stringify(ct)}`);
  report('anthropic.messages.countTokens claude-test', 'messages.count_tokens', [0, 0, 0, 0]);
  const est = await anth.messages.countTokens({ model: 'gpt-test', messages });
  check(est.input_tokens > 0, `countTokens estimated: ${JSON.stringify(est)}`);
  report('anthropic.messages.countTokens gpt-test', 'messages.count_tokens', [0, 0, 0, 0]);
}

async function main() {
  await openaiResponses();
  await openaiChatAndEmbeddings();
  await vercelAi();
  await anthropicSdk();
  console.log('CLIENTS OK');
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
});
