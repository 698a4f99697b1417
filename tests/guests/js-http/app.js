// A wasi:http component built by jco componentize (componentize-js 0.23.0, StarlingMonkey):
// `GET /` answers a greeting, `POST /echo` answers the request's body, anything else is a 404.
// It implements wasi:http/incoming-handler@0.2.12 on the WIT bindings rather than with
// StarlingMonkey's fetch event, which exports the handler at 0.2.10, a WASI version whose WIT
// jco 1.35.0 does not bundle.
import {
  Fields,
  IncomingBody,
  OutgoingBody,
  OutgoingResponse,
  ResponseOutparam,
} from "wasi:http/types@0.2.12";

const encoder = new TextEncoder();

function readBody(request) {
  const body = request.consume();
  const stream = body.stream();
  const chunks = [];
  for (;;) {
    try {
      chunks.push(stream.blockingRead(65536n));
    } catch (e) {
      if (e.payload?.tag === "closed") break;
      throw e;
    }
  }
  stream[Symbol.dispose]();
  IncomingBody.finish(body);
  const all = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.length;
  }
  return all;
}

function respond(responseOut, status, bytes) {
  const headers = Fields.fromList([["content-type", encoder.encode("text/plain")]]);
  const response = new OutgoingResponse(headers);
  response.setStatusCode(status);
  const body = response.body();
  ResponseOutparam.set(responseOut, { tag: "ok", val: response });
  const stream = body.write();
  for (let at = 0; at < bytes.length; at += 4096) {
    // blocking-write-and-flush takes at most 4096 bytes a call.
    stream.blockingWriteAndFlush(bytes.subarray(at, at + 4096));
  }
  stream[Symbol.dispose]();
  OutgoingBody.finish(body, undefined);
}

export const incomingHandler = {
  handle(request, responseOut) {
    const method = request.method().tag;
    const path = request.pathWithQuery();
    if (method === "get" && path === "/") {
      respond(responseOut, 200, encoder.encode("hello from javascript\n"));
    } else if (method === "post" && path === "/echo") {
      respond(responseOut, 200, readBody(request));
    } else {
      respond(responseOut, 404, encoder.encode("not found\n"));
    }
  },
};
