"""A wasi:http/proxy component built by componentize-py: `GET /` answers a greeting,
`POST /echo` answers the request's body, anything else is a 404."""

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports.streams import StreamError_Closed
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    Method_Get,
    Method_Post,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        method = request.method()
        path = request.path_with_query()
        if isinstance(method, Method_Get) and path == "/":
            respond(response_out, 200, b"hello from python\n")
        elif isinstance(method, Method_Post) and path == "/echo":
            respond(response_out, 200, read_body(request))
        else:
            respond(response_out, 404, b"not found\n")


def read_body(request: IncomingRequest) -> bytes:
    chunks = []
    body = request.consume()
    with body.stream() as stream:
        while True:
            try:
                chunks.append(stream.blocking_read(65536))
            except Err as e:
                if isinstance(e.value, StreamError_Closed):
                    break
                raise
    return b"".join(chunks)


def respond(response_out: ResponseOutparam, status: int, body: bytes) -> None:
    response = OutgoingResponse(Fields.from_list([("content-type", b"text/plain")]))
    response.set_status_code(status)
    out = response.body()
    ResponseOutparam.set(response_out, Ok(response))
    with out.write() as stream:
        # blocking-write-and-flush takes at most 4096 bytes a call.
        for at in range(0, len(body), 4096):
            stream.blocking_write_and_flush(body[at : at + 4096])
    OutgoingBody.finish(out, None)
