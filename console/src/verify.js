// In-browser verification of one entry, with WebCrypto only: leaf hash (RFC 8785 header, RFC 9162 leaf
// prefix), payload digest (sha256(salt || JCS(payload))), inclusion proof (RFC 9162 2.1.3.2) and the
// checkpoint's Ed25519 signature (C2SP signed note) under a verifier key the auditor supplied.
import canonicalize from "canonicalize";

const enc = new TextEncoder();

export function hexToBytes(hex) {
  if (typeof hex !== "string" || hex.length % 2 || /[^0-9a-f]/i.test(hex)) throw new Error(`not hex: ${String(hex).slice(0, 20)}`);
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export function bytesToHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function b64ToBytes(b64) {
  const bin = atob(b64);
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let i = 0;
  for (const p of parts) {
    out.set(p, i);
    i += p.length;
  }
  return out;
}

async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

function equal(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

export async function leafHash(header) {
  return sha256(concat(Uint8Array.of(0), enc.encode(canonicalize(header))));
}

async function nodeHash(left, right) {
  return sha256(concat(Uint8Array.of(1), left, right));
}

// RFC 9162 2.1.3.2, step by step.
export async function verifyInclusion(index, size, leaf, proof, root) {
  if (index >= size) return false;
  let fn = index;
  let sn = size - 1;
  let r = leaf;
  for (const p of proof) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      r = await nodeHash(p, r);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 && equal(r, root);
}

// A C2SP signed note: text (with its final newline) and its signature lines.
export function parseNote(note) {
  const cut = note.lastIndexOf("\n\n");
  if (cut < 0) throw new Error("a note needs a blank line before its signatures");
  const text = note.slice(0, cut + 1);
  const sigs = [];
  for (const line of note.slice(cut + 2).split("\n")) {
    if (!line) continue;
    if (!line.startsWith("\u2014 ")) throw new Error(`malformed signature line ${JSON.stringify(line)}`);
    const rest = line.slice(2);
    const sp = rest.lastIndexOf(" ");
    const sig = b64ToBytes(rest.slice(sp + 1));
    // A C2SP tlog-cosignature (cosignature/v1) carries an 8-byte big-endian timestamp before its signature.
    const time = sig.length === 4 + 8 + 64 ? Number(new DataView(sig.buffer, sig.byteOffset + 4, 8).getBigUint64(0)) : null;
    sigs.push({ name: rest.slice(0, sp), keyId: bytesToHex(sig.slice(0, 4)), sig, time });
  }
  return { text, sigs };
}

export function parseCheckpoint(text) {
  const lines = text.split("\n");
  if (lines.length < 4) throw new Error("a checkpoint has an origin, a size and a root hash");
  const size = Number(lines[1]);
  if (!/^[0-9]+$/.test(lines[1]) || !Number.isSafeInteger(size)) throw new Error(`bad tree size ${lines[1]}`);
  const root = b64ToBytes(lines[2]);
  if (root.length !== 32) throw new Error("a root hash has 32 bytes");
  return { origin: lines[0], size, root, extensions: lines.slice(3).filter((l) => l) };
}

// `<name>+<hex key id>+<base64(0x01 || public key)>`; the key id must match the name and key.
export async function parseVerifierKey(vkey) {
  // The name holds no "+", but base64 may: split at the first two.
  const text = vkey.trim();
  const a = text.indexOf("+");
  const b = a < 0 ? -1 : text.indexOf("+", a + 1);
  if (a < 0 || b < 0) throw new Error("a verifier key reads name+keyid+key");
  const name = text.slice(0, a);
  const hexId = text.slice(a + 1, b);
  const b64 = text.slice(b + 1);
  const raw = b64ToBytes(b64);
  if (raw.length !== 33 || raw[0] !== 0x01) throw new Error("not an Ed25519 note verifier key");
  const pub = raw.slice(1);
  const id = (await sha256(concat(enc.encode(name), Uint8Array.of(0x0a, 0x01), pub))).slice(0, 4);
  if (bytesToHex(id) !== hexId.toLowerCase()) throw new Error("the key id does not match the name and key");
  return { name, keyId: hexId.toLowerCase(), pub };
}

export async function verifyNoteSignature(note, vkey) {
  const key = await parseVerifierKey(vkey);
  const { text, sigs } = parseNote(note);
  const mine = sigs.find((s) => s.name === key.name && s.keyId === key.keyId);
  if (!mine) throw new Error(`no signature by ${key.name} (key id ${key.keyId}) on this checkpoint`);
  const pub = await crypto.subtle.importKey("raw", key.pub, { name: "Ed25519" }, false, ["verify"]);
  if (!(await crypto.subtle.verify({ name: "Ed25519" }, pub, mine.sig.slice(4), enc.encode(text)))) {
    throw new Error("the Ed25519 signature does not verify");
  }
  return text;
}

// Each step: {id, title, status: "passed"|"failed"|"not applicable", detail}.
export async function verifyEntry({ entry, checkpoint, proof, vkey }) {
  const steps = [];
  const step = (id, title, status, detail) => steps.push({ id, title, status, detail });
  const h = entry.header;
  let leaf = null;
  try {
    leaf = await leafHash(h);
    const got = bytesToHex(leaf);
    if (got === entry.leaf_hash) step("leaf", "Leaf hash recomputed from the RFC 8785 header", "passed", got);
    else step("leaf", "Leaf hash recomputed from the RFC 8785 header", "failed", `recomputed ${got}, the log says ${entry.leaf_hash}`);
  } catch (e) {
    step("leaf", "Leaf hash recomputed from the RFC 8785 header", "failed", e.message);
  }
  try {
    if (entry.payload === null || entry.payload === undefined) {
      const why = entry.erased ? `payload erased${Number.isInteger(entry.erasure_seq) ? ` by entry ${entry.erasure_seq}` : ""}` : entry.withheld ? `payload withheld: ${entry.withheld}` : "no payload served";
      step("payload", "Payload digest", entry.erased || entry.withheld ? "not applicable" : "failed", why);
    } else {
      const d = await sha256(concat(hexToBytes(entry.salt), enc.encode(canonicalize(entry.payload))));
      const got = `sha256:${bytesToHex(d)}`;
      if (got === h.payload_digest) step("payload", "Payload digest sha256(salt ‖ JCS(payload))", "passed", got);
      else step("payload", "Payload digest sha256(salt ‖ JCS(payload))", "failed", `recomputed ${got}, the header says ${h.payload_digest}`);
    }
  } catch (e) {
    step("payload", "Payload digest sha256(salt ‖ JCS(payload))", "failed", e.message);
  }
  let cp = null;
  try {
    cp = parseCheckpoint(parseNote(checkpoint).text);
    if (!leaf) throw new Error("no leaf hash to prove");
    const ok = proof.tree_size === cp.size && (await verifyInclusion(h.seq, cp.size, leaf, proof.hashes.map(hexToBytes), cp.root));
    const detail = `entry ${h.seq} in the tree of ${cp.size} entries, ${proof.hashes.length} proof hashes`;
    step("inclusion", "Inclusion proof against the checkpoint's root", ok ? "passed" : "failed", ok ? detail : `the proof does not lead to the checkpoint's root (${detail})`);
  } catch (e) {
    step("inclusion", "Inclusion proof against the checkpoint's root", "failed", e.message);
  }
  try {
    if (!vkey || !vkey.trim()) throw new Error("paste or pin the log's verifier key first (`ledger keys verifier`)");
    await verifyNoteSignature(checkpoint, vkey);
    step("signature", "Checkpoint's Ed25519 signature under your verifier key", "passed", vkey.trim().split("+")[0]);
  } catch (e) {
    step("signature", "Checkpoint's Ed25519 signature under your verifier key", "failed", e.message);
  }
  return steps;
}
