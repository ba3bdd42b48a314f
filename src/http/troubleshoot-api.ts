import type { FastifyInstance } from 'fastify';
import { Ajv } from 'ajv';
import { configSchema } from '../config/schema.js';
import type { Troubleshoot, TroubleshootSelection } from '../sink/troubleshoot.js';
import { adminAuth } from './admin-auth.js';

// The same schema as `troubleshoot` in fhir-rte.yaml, both keys required: a PUT replaces the selection.
const validate = new Ajv({ allErrors: true }).compile<TroubleshootSelection>({ ...configSchema.properties.troubleshoot, required: ['types', 'ids'] });

/**
 * `GET /api/troubleshoot` shows the troubleshooting log's selection; `PUT` replaces it while running (`{"types":
 * ["Patient"], "ids": ["Observation/1"]}`; empty lists turn it off). Behind the admin token.
 */
export function troubleshootApi(server: FastifyInstance, troubleshoot: Troubleshoot, adminToken: string | undefined): void {
  void server.register(async (scope) => {
    scope.addHook('onRequest', adminAuth(adminToken));
    scope.get('/api/troubleshoot', async () => troubleshoot.selection);
    scope.put('/api/troubleshoot', async (request, reply) => {
      if (!validate(request.body)) {
        const why = (validate.errors ?? []).map((e) => `${e.instancePath || '/'}: ${e.message}`).join('; ');
        return reply.code(400).send({ error: `expected {"types": [...], "ids": ["Type/id", ...]}: ${why}` });
      }
      troubleshoot.select(request.body);
      return troubleshoot.selection;
    });
  });
}
