-- What an attempt's transport returned (HTTP status, headers and body; later a Kafka offset or
-- an SQS message id) moves into one JSON column, `detail`, tagged by transport, so that a new
-- destination type needs no new columns. Attempts recorded before keep their HTTP detail.

ALTER TABLE attempts ADD COLUMN detail TEXT;

UPDATE attempts SET detail = json_object(
    'type', 'http',
    'status_code', status_code,
    'response_headers', json(COALESCE(response_headers, '[]')),
    'response_body', response_body)
WHERE status_code IS NOT NULL OR response_headers IS NOT NULL;

ALTER TABLE attempts DROP COLUMN status_code;
ALTER TABLE attempts DROP COLUMN response_headers;
ALTER TABLE attempts DROP COLUMN response_body;
