// Passkeys (W3C WebAuthn): the browser half of the ceremonies in idp/mfa/passkeys.py.
// Loaded from our origin only (CSP script-src 'self', no inline script). The server sends
// options as JSON (base64url for binary fields); navigator.credentials wants ArrayBuffers, and
// its answer goes back as JSON (the PublicKeyCredential JSON form of WebAuthn Level 3 §5.1.8).
//
//   #passkey-register  (account page)  options -> create() -> POST JSON -> go to the answer's redirect
//   #passkey-login     (sign-in pages) options -> get() -> fill the form's "credential" -> submit it
"use strict";

(function () {
  function fromB64url(text) {
    const b64 = text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4);
    return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)).buffer;
  }

  function toB64url(buffer) {
    let s = "";
    new Uint8Array(buffer).forEach((b) => { s += String.fromCharCode(b); });
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function descriptors(list) {
    return (list || []).map((c) => Object.assign({}, c, { id: fromB64url(c.id) }));
  }

  function creationOptions(json) {
    return Object.assign({}, json, {
      challenge: fromB64url(json.challenge),
      user: Object.assign({}, json.user, { id: fromB64url(json.user.id) }),
      excludeCredentials: descriptors(json.excludeCredentials),
    });
  }

  function requestOptions(json) {
    return Object.assign({}, json, {
      challenge: fromB64url(json.challenge),
      allowCredentials: descriptors(json.allowCredentials),
    });
  }

  function credentialJSON(credential) {
    const r = credential.response;
    const out = {
      id: credential.id, rawId: toB64url(credential.rawId), type: credential.type,
      authenticatorAttachment: credential.authenticatorAttachment || null,
      clientExtensionResults: credential.getClientExtensionResults ? credential.getClientExtensionResults() : {},
      response: { clientDataJSON: toB64url(r.clientDataJSON) },
    };
    if (r.attestationObject) {
      out.response.attestationObject = toB64url(r.attestationObject);
      out.response.transports = r.getTransports ? r.getTransports() : [];
    } else {
      out.response.authenticatorData = toB64url(r.authenticatorData);
      out.response.signature = toB64url(r.signature);
      out.response.userHandle = r.userHandle ? toB64url(r.userHandle) : null;
    }
    return out;
  }

  async function postJSON(url, csrf, body) {
    const response = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body),
    });
    if (response.status === 429) {  // a rate limit (RFC 6585 §4): say how long to wait
      const wait = parseInt(response.headers.get("Retry-After") || "", 10);
      const minutes = Math.ceil(wait / 60);
      throw new Error("Too many attempts. " + (!(wait > 0) ? "Try again later."
        : wait < 60 ? "Try again in " + wait + " seconds."
          : "Try again in " + minutes + (minutes > 1 ? " minutes." : " minute.")));
    }
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      throw new Error(data.error_description || "The request failed (" + response.status + ").");
    }
    return data;
  }

  function explain(error) {
    if (error && error.name === "NotAllowedError") return "The passkey prompt was closed or timed out. Try again.";
    if (error && error.name === "InvalidStateError") return "This device already has a passkey for your account.";
    return (error && error.message) || "Something went wrong. Try again.";
  }

  function wire(container, button, run) {
    const status = container.querySelector("[data-passkey-status]");
    const show = (text) => { if (status) { status.textContent = text; status.hidden = !text; } };
    if (!window.PublicKeyCredential || !navigator.credentials) {
      button.disabled = true;
      show("This browser does not support passkeys.");
      return;
    }
    button.addEventListener("click", async () => {
      button.disabled = true;
      show("");
      try {
        await run();
      } catch (error) {
        show(explain(error));
        button.disabled = false;
      }
    });
  }

  const register = document.getElementById("passkey-register");
  if (register) {
    wire(register, document.getElementById("passkey-register-button"), async () => {
      const csrf = register.dataset.csrf;
      const options = await postJSON(register.dataset.optionsUrl, csrf, {});
      const credential = await navigator.credentials.create({ publicKey: creationOptions(options) });
      const name = document.getElementById("passkey-new-name");
      const done = await postJSON(register.dataset.verifyUrl, csrf,
        { credential: credentialJSON(credential), name: name && name.value ? name.value : null });
      window.location.assign(done.redirect);
    });
  }

  const login = document.getElementById("passkey-login");
  if (login) {
    const form = login.querySelector("form");
    wire(login, login.querySelector("[data-passkey-start]"), async () => {
      // The form's hidden fields (interaction id ...) also identify the ceremony to the options endpoint.
      const fields = {};
      new FormData(form).forEach((value, key) => {
        if (key !== "credential" && key !== "csrf_token") fields[key] = value;
      });
      const options = await postJSON(login.dataset.optionsUrl, form.elements.csrf_token.value, fields);
      const credential = await navigator.credentials.get({ publicKey: requestOptions(options) });
      form.elements.credential.value = JSON.stringify(credentialJSON(credential));
      form.submit();
    });
  }
})();
