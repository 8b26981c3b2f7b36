SELECT model, context_tokens, fixed_sampling, thinking, batch_api FROM models;
