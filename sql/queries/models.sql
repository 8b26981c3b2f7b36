SELECT model, context_tokens, fixed_sampling, thinking FROM models;
