#!/usr/bin/env node
// Signs webhook requests the way GitHub, Shopify and Linear do, with their own npm packages.
//
// Part of hookstream's provider conformance suite. Run with `node` and the env NODE_MODULES
// set to the node_modules dir that ./setup prints. It prints ONE JSON object on stdout:
//
//   {"headers": {"Name": "value", ...}, "body": "<exact body to send>"}
//
// Send `body` as its UTF-8 bytes, unchanged. Before printing, the signature is checked with
// the package's own verify/validate function; a failed check exits with status 2.
//
// Usage: NODE_MODULES=... node sign.mjs PROVIDER [--secret S] [--body BODY | --body-file F]
//                                      [--timestamp UNIX_SECONDS] [--url URL] [--id MSG_ID]
// Providers: github, shopify, linear.

import { createHmac, randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

const PROVIDERS = ["github", "shopify", "linear"];

// Secrets used when --secret is not given (test values, never real credentials). GitHub's is
// the one its documentation's worked example uses.
const DEFAULT_SECRETS = {
  github: "It's a Secret to Everybody",
  shopify: "hookstream-shopify-api-secret",
  linear: "lin_wh_hookstream_conformance_secret",
};

class CheckFailed extends Error {}

function note(provider, message) {
  process.stderr.write(`sign.mjs ${provider}: ${message}\n`);
}

function die(message) {
  process.stderr.write(`sign.mjs: ${message}\n`);
  process.exit(1);
}

// --- Loading packages from $NODE_MODULES -------------------------------------------------
// ES modules ignore NODE_PATH and the packages live outside this folder, so a package's entry
// point is found from its package.json "exports" with the conditions an ES import in Node
// uses, and then imported by file URL (its own imports resolve from where it lives).

const CONDITIONS = ["node", "import", "default"];

function resolveTarget(target, star) {
  if (typeof target === "string") return star === undefined ? target : target.replaceAll("*", star);
  if (Array.isArray(target)) {
    for (const t of target) {
      const r = resolveTarget(t, star);
      if (r) return r;
    }
    return undefined;
  }
  if (target && typeof target === "object") {
    for (const [condition, sub] of Object.entries(target)) {
      if (!CONDITIONS.includes(condition)) continue;
      const r = resolveTarget(sub, star);
      if (r) return r;
    }
  }
  return undefined;
}

function resolveEntry(nodeModules, specifier) {
  const parts = specifier.split("/");
  const nameLength = specifier.startsWith("@") ? 2 : 1;
  const name = parts.slice(0, nameLength).join("/");
  const subpath = parts.length > nameLength ? "./" + parts.slice(nameLength).join("/") : ".";
  const dir = join(nodeModules, name);
  const manifestPath = join(dir, "package.json");
  if (!existsSync(manifestPath)) throw new Error(`${name} is not installed in ${nodeModules} (run ./setup)`);
  const manifest = JSON.parse(readFileSync(manifestPath, "utf8"));
  let exportsField = manifest.exports;
  let target;
  if (exportsField !== undefined) {
    if (typeof exportsField === "string" || Array.isArray(exportsField) ||
        !Object.keys(exportsField).some((k) => k.startsWith("."))) {
      exportsField = { ".": exportsField };
    }
    if (subpath in exportsField) {
      target = resolveTarget(exportsField[subpath]);
    } else {
      for (const [key, value] of Object.entries(exportsField)) {
        const star = key.indexOf("*");
        if (star < 0) continue;
        const prefix = key.slice(0, star);
        const suffix = key.slice(star + 1);
        if (subpath.startsWith(prefix) && subpath.endsWith(suffix) && subpath.length >= key.length - 1) {
          target = resolveTarget(value, subpath.slice(prefix.length, subpath.length - suffix.length));
          if (target) break;
        }
      }
    }
  } else {
    target = subpath === "." ? manifest.module || manifest.main || "index.js" : subpath;
  }
  if (!target) throw new Error(`${specifier}: no entry point for an ES import in ${manifestPath}`);
  return join(dir, target);
}

async function load(specifier) {
  const nodeModules = process.env.NODE_MODULES;
  if (!nodeModules) die("set NODE_MODULES to the node_modules dir that ./setup prints");
  return import(pathToFileURL(resolveEntry(nodeModules, specifier)).href);
}

// --- Default bodies ------------------------------------------------------------------------

function iso(ts) {
  return new Date(ts * 1000).toISOString();
}

function defaultBody(provider, id, ts) {
  if (provider === "github") {
    return JSON.stringify({
      zen: "Design for failure.",
      hook_id: 109948940,
      hook: { type: "Repository", id: 109948940, active: true, events: ["push"] },
      repository: { id: 35129377, full_name: "hookstream/example" },
      sender: { login: "octocat", id: 1 },
    });
  }
  if (provider === "shopify") {
    return JSON.stringify({
      id: 450789469,
      admin_graphql_api_id: "gid://shopify/Order/450789469",
      created_at: iso(ts),
      currency: "USD",
      total_price: "403.00",
      note: id,
    });
  }
  // Linear signs webhookTimestamp (milliseconds) inside the body.
  return JSON.stringify({
    action: "create",
    type: "Issue",
    data: { id: "2174add1-f7c8-44e3-bbf3-2d60b5ea8bc9", title: "Conformance", number: 1 },
    url: "https://linear.app/hookstream/issue/HOOK-1",
    createdAt: iso(ts),
    organizationId: "9d5b3e5b-2b0c-4d3c-8d3e-5e0f1a2b3c4d",
    webhookId: id,
    webhookTimestamp: ts * 1000,
  });
}

// --- Providers ------------------------------------------------------------------------------

async function signGithub(a) {
  const { sign, verify } = await load("@octokit/webhooks-methods");
  const signature = await sign(a.secret, a.body);
  if (!(await verify(a.secret, a.body, signature))) throw new CheckFailed("@octokit/webhooks-methods verify returned false");
  a.checked = "@octokit/webhooks-methods verify";
  return {
    headers: {
      "X-Hub-Signature-256": signature,
      "X-GitHub-Event": "ping",
      "X-GitHub-Delivery": a.id,
    },
    body: a.body,
  };
}

async function signShopify(a) {
  const runtime = await load("@shopify/shopify-api/runtime");
  // The same function shopify.webhooks.validate computes the expected HMAC with.
  const hmac = await runtime.createSHA256HMAC(a.secret, a.body, runtime.HashFormat.Base64);
  const { getHmac } = await load("@shopify/shopify-api/test-helpers");
  if (getHmac(a.body, a.secret) !== hmac) throw new CheckFailed("test-helpers getHmac disagrees with createSHA256HMAC");

  await load("@shopify/shopify-api/adapters/node");
  const { shopifyApi, ApiVersion, LogSeverity } = await load("@shopify/shopify-api");
  const apiVersion = Object.values(ApiVersion).filter((v) => /^\d{4}-\d{2}$/.test(v)).sort().pop();
  const headers = {
    "X-Shopify-Hmac-Sha256": hmac,
    "X-Shopify-Topic": "orders/create",
    "X-Shopify-Shop-Domain": "hookstream-test.myshopify.com",
    "X-Shopify-API-Version": apiVersion,
    "X-Shopify-Webhook-Id": a.id,
    "X-Shopify-Event-Id": a.id,
    "X-Shopify-Triggered-At": iso(a.timestamp),
  };
  const shopify = shopifyApi({
    apiKey: "hookstream-conformance",
    apiSecretKey: a.secret,
    apiVersion,
    hostName: "localhost",
    isEmbeddedApp: false,
    logger: { level: LogSeverity.Error, log: (_severity, message) => note("shopify", message) },
  });
  const rawRequest = {
    method: "POST",
    url: "/webhooks",
    headers: Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v])),
  };
  const result = await shopify.webhooks.validate({ rawBody: a.body, rawRequest, rawResponse: {} });
  if (!result.valid) throw new CheckFailed(`shopify.webhooks.validate: ${JSON.stringify(result)}`);
  a.checked = "shopify.webhooks.validate (node adapter) and test-helpers getHmac";
  return { headers, body: a.body };
}

async function signLinear(a) {
  const { LinearWebhookClient, LINEAR_WEBHOOK_SIGNATURE_HEADER } = await load("@linear/sdk/webhooks");
  // @linear/sdk only verifies; the signature is the documented scheme: hex HMAC-SHA256 of the
  // raw body with the webhook's signing secret.
  const signature = createHmac("sha256", a.secret).update(a.body, "utf8").digest("hex");
  try {
    new LinearWebhookClient(a.secret).verify(Buffer.from(a.body, "utf8"), signature);
    a.checked = "@linear/sdk LinearWebhookClient.verify";
  } catch (e) {
    // verify compares the signature first; anything it throws after that is about the body's
    // webhookTimestamp (missing, or outside its 60 s window), so the signature itself held.
    if (/signature/i.test(e.message)) throw new CheckFailed(`LinearWebhookClient.verify: ${e.message}`);
    a.checked = `@linear/sdk LinearWebhookClient.verify, signature only: it rejected the timestamp (${e.message})`;
  }
  return {
    headers: {
      [LINEAR_WEBHOOK_SIGNATURE_HEADER]: signature,
      "linear-delivery": a.id,
      "linear-event": "Issue",
    },
    body: a.body,
  };
}

const SIGNERS = { github: signGithub, shopify: signShopify, linear: signLinear };

function parse(argv) {
  const usage =
    "usage: node sign.mjs {github,shopify,linear} [--secret S] [--body BODY | --body-file F] " +
    "[--timestamp UNIX_SECONDS] [--url URL] [--id MSG_ID]";
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        secret: { type: "string" },
        body: { type: "string" },
        "body-file": { type: "string" },
        timestamp: { type: "string" },
        url: { type: "string" },
        id: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (e) {
    die(`${e.message}\n${usage}`);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(usage + "\n");
    process.exit(0);
  }
  if (positionals.length !== 1 || !PROVIDERS.includes(positionals[0])) die(usage);
  if (values.body !== undefined && values["body-file"] !== undefined) die("give --body or --body-file, not both");
  const provider = positionals[0];
  let timestamp = Math.floor(Date.now() / 1000);
  if (values.timestamp !== undefined) {
    if (!/^-?\d+$/.test(values.timestamp)) die("--timestamp must be unix seconds");
    timestamp = Number(values.timestamp);
  }
  const id = values.id ?? "msg_" + randomBytes(12).toString("hex");
  let body = values.body;
  if (values["body-file"] !== undefined) body = readFileSync(values["body-file"], "utf8");
  if (body === undefined) body = defaultBody(provider, id, timestamp);
  return {
    provider,
    secret: values.secret ?? DEFAULT_SECRETS[provider],
    body,
    timestamp,
    url: values.url,
    id,
    checked: null,
  };
}

async function main() {
  const a = parse(process.argv.slice(2));
  // Package code must not write to stdout: the one JSON object is all it carries.
  const toStderr = (...args) => process.stderr.write(args.map(String).join(" ") + "\n");
  for (const level of ["log", "info", "debug", "warn"]) console[level] = toStderr;
  let out;
  try {
    out = await SIGNERS[a.provider](a);
  } catch (e) {
    if (e instanceof CheckFailed) {
      note(a.provider, `self-check FAILED: ${e.message}`);
      process.exit(2);
    }
    throw e;
  }
  note(a.provider, `self-check passed: ${a.checked}`);
  process.stdout.write(JSON.stringify(out) + "\n");
}

main().catch((e) => {
  process.stderr.write(`sign.mjs: ${e?.stack ?? e}\n`);
  process.exit(1);
});
