#!/usr/bin/env node
// A relying party built on openid-client v6 (panva), driven step by step by the pytest
// interop tests (test_openid_client.py). Every step discovers the issuer again, so nothing
// is cached between steps except what the test passes back in.
//
//   node rp.mjs COMMAND 'JSON'
//   node rp.mjs serve        (the same, as JSON lines {command, args} -> {status, output})
//
// JSON always holds {issuer, client_id, client_secret?, auth_method?, discovery?} plus the command's own
// fields (below). The result is one JSON object on stdout; it also lists, as http_requests,
// every request openid-client made for the command. OAuth errors reported by the
// server (token/userinfo/introspection/revocation error bodies, error authorization
// responses, WWW-Authenticate challenges) are printed as
//   {"oauth_error": {"error", "error_description", "status", "name", "code", "message"}}
// with exit status 3 so a test can assert on them; anything else (a failed ID token check,
// a protocol violation spotted by the library, a crash) goes to stderr with exit status 1.
//
// Commands:
//   discover                      -> {metadata}
//   start {redirect_uri, scope, params?}
//                                 -> {url, state, nonce, code_verifier}   (PKCE S256)
//   callback {callback_url, state, nonce, code_verifier, max_age?, form_post?}
//                                 (form_post: callback_url carries the POSTed form as its query)
//                                 -> {tokens, claims, id_token_header, at_hash_ok}
//   userinfo {access_token, sub}  -> {userinfo}
//   refresh {refresh_token}       -> {tokens, claims?}
//   introspect {token, token_type_hint?}        -> {introspection}
//   revoke {token, token_type_hint?}            -> {revoked: true}
//   client_credentials {scope?}   -> {tokens}
//   end_session {id_token_hint, post_logout_redirect_uri, state}  -> {url}
import { createHash } from 'node:crypto';

import * as client from 'openid-client';

function b64url(buf) {
  return Buffer.from(buf).toString('base64url');
}

function decodeHeader(jwt) {
  return JSON.parse(Buffer.from(jwt.split('.')[0], 'base64url').toString('utf8'));
}

// OIDC Core 3.1.3.6: left-most half of the hash of the ASCII access token, hash named by the
// ID token's alg (RS256 -> SHA-256). openid-client checks at_hash only for the hybrid/implicit
// flows, so the code flow's at_hash is checked here.
function atHashMatches(idToken, accessToken) {
  const { alg } = decodeHeader(idToken);
  const bits = { 256: 'sha256', 384: 'sha384', 512: 'sha512' }[alg.slice(-3)];
  if (!bits) throw new Error(`unexpected ID token alg ${alg}`);
  const digest = createHash(bits).update(accessToken, 'ascii').digest();
  const claims = JSON.parse(Buffer.from(idToken.split('.')[1], 'base64url').toString('utf8'));
  return claims.at_hash === b64url(digest.subarray(0, digest.length / 2));
}

function clientAuth(opts) {
  switch (opts.auth_method || 'client_secret_basic') {
    case 'client_secret_basic': return client.ClientSecretBasic(opts.client_secret);
    case 'client_secret_post': return client.ClientSecretPost(opts.client_secret);
    case 'none': return client.None();
    default: throw new Error(`unsupported auth_method ${opts.auth_method}`);
  }
}

// Every HTTP request openid-client makes for the current command ("METHOD url"), so a test can
// see, e.g., that the JWKS was fetched to check the ID token signature.
let requested = [];

function recordingFetch(url, options) {
  requested.push(`${options?.method || 'GET'} ${url}`);
  return fetch(url, options);
}

async function configure(opts) {
  const metadata = {};
  if (opts.client_secret) metadata.client_secret = opts.client_secret;
  // Loopback test servers speak plain http; openid-client refuses that unless told.
  // enableNonRepudiationChecks: verify ID token signatures against the issuer's JWKS
  // (openid-client otherwise trusts the TLS channel to the token endpoint).
  return client.discovery(new URL(opts.issuer), opts.client_id, metadata, clientAuth(opts), {
    execute: [client.allowInsecureRequests, client.enableNonRepudiationChecks],
    [client.customFetch]: recordingFetch,
    // 'oidc' reads /.well-known/openid-configuration, 'oauth2' the RFC 8414 document.
    algorithm: opts.discovery || 'oidc',
  });
}

function tokensOut(tokens) {
  const out = { ...tokens };
  if (tokens.id_token) {
    out.claims = tokens.claims();
    out.id_token_header = decodeHeader(tokens.id_token);
    out.at_hash_ok = atHashMatches(tokens.id_token, tokens.access_token);
  }
  return out;
}

const commands = {
  async discover(opts) {
    const config = await configure(opts);
    return { metadata: config.serverMetadata() };
  },

  async start(opts) {
    const config = await configure(opts);
    const codeVerifier = client.randomPKCECodeVerifier();
    const state = client.randomState();
    const nonce = client.randomNonce();
    const params = {
      redirect_uri: opts.redirect_uri,
      scope: opts.scope || 'openid',
      code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
      code_challenge_method: 'S256',
      state,
      nonce,
      ...(opts.params || {}),
    };
    const url = client.buildAuthorizationUrl(config, params);
    return { url: url.href, state, nonce, code_verifier: codeVerifier };
  },

  async callback(opts) {
    const config = await configure(opts);
    const checks = {
      pkceCodeVerifier: opts.code_verifier,
      expectedState: opts.state,
      expectedNonce: opts.nonce,
      idTokenExpected: true,
    };
    if (opts.max_age !== undefined && opts.max_age !== null) checks.maxAge = opts.max_age;
    let current = new URL(opts.callback_url);
    if (opts.form_post) {
      // response_mode=form_post: the browser POSTs the parameters to the redirect URI.
      const body = current.searchParams.toString();
      current.search = '';
      current = new Request(current, {
        method: 'POST', body, headers: { 'content-type': 'application/x-www-form-urlencoded' },
      });
    }
    const tokens = await client.authorizationCodeGrant(config, current, checks);
    return { tokens: tokensOut(tokens) };
  },

  async userinfo(opts) {
    const config = await configure(opts);
    return { userinfo: await client.fetchUserInfo(config, opts.access_token, opts.sub) };
  },

  async refresh(opts) {
    const config = await configure(opts);
    const tokens = await client.refreshTokenGrant(config, opts.refresh_token);
    return { tokens: tokensOut(tokens) };
  },

  async introspect(opts) {
    const config = await configure(opts);
    const params = opts.token_type_hint ? { token_type_hint: opts.token_type_hint } : undefined;
    return { introspection: await client.tokenIntrospection(config, opts.token, params) };
  },

  async revoke(opts) {
    const config = await configure(opts);
    const params = opts.token_type_hint ? { token_type_hint: opts.token_type_hint } : undefined;
    await client.tokenRevocation(config, opts.token, params);
    return { revoked: true };
  },

  async client_credentials(opts) {
    const config = await configure(opts);
    const params = opts.scope ? { scope: opts.scope } : {};
    return { tokens: await client.clientCredentialsGrant(config, params) };
  },

  async end_session(opts) {
    const config = await configure(opts);
    const params = {};
    for (const k of ['id_token_hint', 'post_logout_redirect_uri', 'state']) {
      if (opts[k]) params[k] = opts[k];
    }
    return { url: client.buildEndSessionUrl(config, params).href };
  },
};

function oauthError(err) {
  // ResponseBodyError (error JSON from an endpoint), AuthorizationResponseError (error in the
  // redirect), WWWAuthenticateChallengeError (401 from userinfo).
  if (err instanceof client.ResponseBodyError || err instanceof client.AuthorizationResponseError) {
    return { error: err.error, error_description: err.error_description ?? null, status: err.status ?? null };
  }
  if (err instanceof client.WWWAuthenticateChallengeError) {
    const challenge = (err.cause || [])[0] || {};
    return {
      error: challenge.parameters?.error ?? null,
      error_description: challenge.parameters?.error_description ?? null,
      status: err.status ?? err.response?.status ?? null,
      scheme: challenge.scheme ?? null,
    };
  }
  return null;
}

async function run(command, opts) {
  // -> [exitStatus, output]: 0 success, 3 OAuth error from the server, 1 anything else.
  requested = [];
  try {
    const output = await commands[command](opts);
    return [0, { ...output, http_requests: requested }];
  } catch (err) {
    const oe = oauthError(err);
    if (oe) return [3, { oauth_error: { ...oe, name: err.name, code: err.code, message: err.message } }];
    let text = err?.stack || String(err);
    if (err?.code) text += `\ncode: ${err.code}`;
    if (err?.cause) text += `\ncause: ${JSON.stringify(err.cause, null, 1)}`;
    return [1, { fatal: text }];
  }
}

async function serve() {
  // One JSON request per line on stdin ({command, args}); one JSON answer per line on stdout
  // ({status, output}). Saves a node start-up per step.
  const readline = await import('node:readline');
  const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of rl) {
    if (!line.trim()) continue;
    const { command, args } = JSON.parse(line);
    const [status, output] = commands[command]
      ? await run(command, args)
      : [2, { fatal: `unknown command ${command}` }];
    process.stdout.write(`${JSON.stringify({ status, output })}\n`);
  }
}

async function main() {
  const [command, json] = process.argv.slice(2);
  if (command === 'serve') return serve();
  if (!commands[command]) {
    console.error(`usage: node rp.mjs {${Object.keys(commands).join('|')}} JSON | node rp.mjs serve`);
    process.exit(2);
  }
  const [status, output] = await run(command, JSON.parse(json || '{}'));
  if (status === 1) {
    console.error(output.fatal);
  } else {
    process.stdout.write(JSON.stringify(output));
  }
  process.exitCode = status;
}

main();
