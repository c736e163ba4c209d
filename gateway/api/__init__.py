"""The API's request path, from the caller's socket to the pipeline's result:

http_protocol  the connection: parser refusals, header deadline, broken bodies
app            the application and its one middleware (request id, errors, log)
handlers       thin: intake → the exactly-once skeleton → the answer
intake         the request's headers and query, checked before the body
body           the body itself: streamed or spooled, counted, hashed, sniffed
form           multipart forms, each file uploaded as it arrives
pipeline       slot → PUT → send, and the typed results
admission, idempotency, spool   what the handlers share; keys: the typed app and request keys
shared_idempotency   the same keys in Redis, for replicas (GATEWAY_IDEMPOTENCY_URL)
"""
