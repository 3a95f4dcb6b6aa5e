/**
 * A self-signed certificate made by openssl at test time: CN=localhost, subjectAltName
 * localhost and 127.0.0.1, CA:FALSE, valid for a day.
 */

/** Paths and contents of a test certificate and its key. */
export interface TestCert {
  certFile: string;
  keyFile: string;
  cert: string;
  key: string;
}

/** Writes a certificate and key into `dir` with openssl. */
export async function makeCert(dir: string): Promise<TestCert> {
  const certFile = `${dir}/cert.pem`;
  const keyFile = `${dir}/key.pem`;
  const out = await new Deno.Command("openssl", {
    args: [
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-days",
      "1",
      "-subj",
      "/CN=localhost",
      "-addext",
      "subjectAltName=DNS:localhost,IP:127.0.0.1",
      "-addext",
      "basicConstraints=critical,CA:FALSE",
      "-keyout",
      keyFile,
      "-out",
      certFile,
    ],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(`openssl failed: ${new TextDecoder().decode(out.stderr)}`);
  return {
    certFile,
    keyFile,
    cert: await Deno.readTextFile(certFile),
    key: await Deno.readTextFile(keyFile),
  };
}
