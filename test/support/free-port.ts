export { anyFreePort as freePort } from '../../src/sink/postgres/embedded.js';
