import { IDENTIFIER_PATTERN } from './identifier.js';

/** JSON Schema of fhir-rte.yaml. Unknown keys are errors: a typo must not silently fall back to a default. */
export const configSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    database: {
      type: 'object',
      additionalProperties: false,
      properties: {
        url: { type: 'string', description: 'postgres:// connection URL; DATABASE_URL overrides it' },
        schema: { type: 'string', pattern: IDENTIFIER_PATTERN, description: 'schema of the exported tables' },
        poolSize: { type: 'integer', minimum: 1, maximum: 100 },
        statementTimeoutMs: { type: 'integer', minimum: 0, description: 'statement_timeout of every session; 0: the server setting' },
        idleInTransactionTimeoutMs: { type: 'integer', minimum: 0, description: 'idle_in_transaction_session_timeout of every session; 0: the server setting' },
      },
    },
    embedded: {
      type: 'object',
      additionalProperties: false,
      properties: {
        dataDir: { type: 'string' },
        port: { type: 'integer', minimum: 1, maximum: 65535 },
      },
    },
    transformers: { type: 'string', description: 'directory of transformer files' },
    deleteMode: { enum: ['logical', 'hard'] },
    storeResources: { type: 'boolean' },
    createTables: { type: 'boolean' },
    batch: {
      type: 'object',
      additionalProperties: false,
      properties: {
        maxEvents: { type: 'integer', minimum: 1, maximum: 100000 },
      },
    },
    retry: {
      type: 'object',
      additionalProperties: false,
      properties: {
        initialMs: { type: 'integer', minimum: 1 },
        maxMs: { type: 'integer', minimum: 1 },
      },
    },
    log: {
      type: 'object',
      additionalProperties: false,
      properties: { level: { enum: ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] } },
    },
    kafka: {
      type: 'object',
      additionalProperties: false,
      properties: {
        brokers: { type: 'array', items: { type: 'string' }, minItems: 1 },
        clientId: { type: 'string' },
        groupId: { type: 'string' },
        topics: { type: 'array', items: { type: 'string' }, minItems: 1 },
        topicPattern: { type: 'string', description: 'a regular expression' },
        fromBeginning: { type: 'boolean' },
        partitionsConsumedConcurrently: { type: 'integer', minimum: 1, maximum: 1000 },
        sessionTimeoutMs: { type: 'integer', minimum: 6000, maximum: 300000, description: 'how long the group waits for a silent member before moving its partitions' },
        ssl: {
          type: 'object',
          additionalProperties: false,
          properties: {
            ca: { type: 'string', description: 'path to a PEM file' },
            cert: { type: 'string', description: 'path to a PEM file' },
            key: { type: 'string', description: 'path to a PEM file' },
            rejectUnauthorized: { type: 'boolean' },
          },
        },
        sasl: {
          type: 'object',
          additionalProperties: false,
          // username and password may come from KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD instead (config.ts).
          properties: {
            mechanism: { enum: ['plain', 'scram-sha-256', 'scram-sha-512'] },
            username: { type: 'string' },
            password: { type: 'string' },
          },
        },
      },
    },
    http: {
      type: 'object',
      additionalProperties: false,
      properties: {
        enabled: { type: 'boolean', description: 'false: no HTTP server (no metrics, health or receiver), e.g. Kafka members sharing a host' },
        host: { type: 'string', description: 'the address to listen on (default 127.0.0.1; another address needs resthook.secret when the receiver runs)' },
        port: { type: 'integer', minimum: 0, maximum: 65535 },
        tls: {
          type: 'object',
          additionalProperties: false,
          required: ['cert', 'key'],
          properties: {
            cert: { type: 'string', description: 'path to a PEM file' },
            key: { type: 'string', description: 'path to a PEM file' },
          },
        },
      },
    },
    health: {
      type: 'object',
      additionalProperties: false,
      properties: {
        maxStallMs: { type: 'integer', minimum: 0, description: '/readyz turns unready when a batch has waited out transient faults this long' },
        maxWatermarkAgeMs: { type: 'integer', minimum: 1000, description: "/readyz turns unready when gap repair's watermark is older (default 3 × repairEveryMs + repairMarginMs)" },
      },
    },
    troubleshoot: {
      type: 'object',
      additionalProperties: false,
      properties: {
        types: { type: 'array', items: { type: 'string', pattern: '^[A-Z][A-Za-z]{1,63}$' }, description: 'resource types whose events the troubleshooting log follows' },
        ids: { type: 'array', items: { type: 'string', pattern: '^[A-Z][A-Za-z]{1,63}/[A-Za-z0-9\\-.]{1,64}$' }, description: 'resources (Type/id) whose events the troubleshooting log follows' },
      },
    },
    resthook: {
      type: 'object',
      additionalProperties: false,
      properties: {
        path: { type: 'string', pattern: '^/[A-Za-z0-9_\\-./]*$' },
        // May come from FHIR_RTE_RESTHOOK_SECRET instead (config.ts): secrets belong in the environment.
        secret: { type: 'string', minLength: 1 },
        ackTimeoutMs: { type: 'integer', minimum: 100, maximum: 600000, description: 'longest wait for a delivery\'s commit before answering 503' },
        maxBodyBytes: { type: 'integer', minimum: 1024 },
        groupWindowMs: { type: 'integer', minimum: 0, maximum: 1000, description: 'how long concurrent deliveries are gathered into one transaction' },
        maxEvents: { type: 'integer', minimum: 1, description: 'the most events in one group commit' },
        groupsInFlight: { type: 'integer', minimum: 1, maximum: 64, description: 'group commits applying at once (default database.poolSize); the next gathers meanwhile' },
        retryAfterSeconds: { type: 'integer', minimum: 1, maximum: 3600 },
        relayTo: { enum: ['postgres', 'kafka'], description: 'make deliveries durable in the database, or in Kafka for the consumer group to apply' },
        relayTopic: { type: 'string', pattern: '^[A-Za-z0-9._-]{1,249}$', description: 'with relayTo kafka: the topic (default: the first of kafka.topics)' },
      },
    },
    admin: {
      type: 'object',
      additionalProperties: false,
      properties: {
        // May come from FHIR_RTE_ADMIN_TOKEN instead (config.ts): secrets belong in the environment.
        token: { type: 'string', minLength: 16, description: 'the bearer token of the dead-letter API and console; none: both are off' },
      },
    },
    fhirServer: {
      type: 'object',
      additionalProperties: false,
      required: ['baseUrl'],
      // Secrets may come from FHIR_RTE_FHIR_SERVER_USERNAME / _PASSWORD / _TOKEN / _PRIVATE_KEY instead (config.ts).
      properties: {
        baseUrl: { type: 'string', pattern: '^https?://', description: 'the FHIR base URL, e.g. https://fhir.example.org/fhir; FHIR_RTE_FHIR_SERVER_URL overrides it' },
        auth: {
          type: 'object',
          additionalProperties: false,
          properties: {
            type: { enum: ['none', 'basic', 'bearer', 'smart'] },
            username: { type: 'string' },
            password: { type: 'string' },
            token: { type: 'string' },
            tokenUrl: { type: 'string', pattern: '^https?://', description: 'smart: the token endpoint' },
            clientId: { type: 'string', minLength: 1, description: 'smart: the registered client id' },
            privateKey: { type: 'string', minLength: 1, description: 'smart: path to a PKCS#8 PEM private key; FHIR_RTE_FHIR_SERVER_PRIVATE_KEY overrides it' },
            alg: { enum: ['RS384', 'ES384'], description: 'smart: the client assertion\'s signing algorithm' },
            kid: { type: 'string', minLength: 1, description: 'smart: the key id in the JWKS registered for the client' },
            scope: { type: 'string', minLength: 1, description: 'smart: the scopes asked for' },
          },
        },
        timeoutMs: { type: 'integer', minimum: 1, description: 'one request, from sending to the end of the body' },
        maxAttempts: { type: 'integer', minimum: 1, maximum: 100, description: 'tries of a request answered 429, 5xx or not at all' },
        retryAfterMaxMs: { type: 'integer', minimum: 0, description: 'the longest Retry-After honoured' },
        maxConcurrency: { type: 'integer', minimum: 1, maximum: 64, description: 'requests to the server in flight at once (delete resolution, id-only reads, gap repair, subscribe)' },
        maxRequestsPerSecond: { type: 'number', exclusiveMinimum: 0, description: 'requests to the server started a second, on average' },
        tls: {
          type: 'object',
          additionalProperties: false,
          properties: {
            ca: { type: 'string', description: 'path to a PEM file of the CA certificates to trust' },
            cert: { type: 'string', description: 'path to a PEM client certificate' },
            key: { type: 'string', description: 'path to the PEM key of the client certificate' },
            rejectUnauthorized: { type: 'boolean' },
          },
        },
        historyTypes: { type: 'array', items: { type: 'string', pattern: '^[A-Z][A-Za-z]{1,63}$' }, description: 'read each type\'s _history instead of the system _history' },
        pageSize: { type: 'integer', minimum: 1, maximum: 1000, description: '_count of a _history page' },
        repairEveryMs: { type: 'integer', minimum: 1000, description: 'how often gap repair reads _history' },
        repairMarginMs: { type: 'integer', minimum: 0, description: 'how far before its watermark gap repair reads again' },
        firstRepair: { enum: ['full', 'now'], description: 'without a watermark: read all history, or only from now' },
      },
    },
  },
} as const;
