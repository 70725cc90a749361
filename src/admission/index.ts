export type { Admission, RateDecision, RateSubject, Release } from './admission.js';
export { MemoryAdmission, type MemoryAdmissionOptions } from './memory.js';
export { countRequest } from './refusal.js';
