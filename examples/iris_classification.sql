-- Classification on iris through pgmlcat, with psql:
--   psql "host=127.0.0.1 port=6432 user=app dbname=app" -f examples/iris_classification.sql
-- The database needs no extension: pgmlcat answers every pgml.* call.
\set ON_ERROR_STOP on

-- The data ships with pgmlcat; this creates and fills pgml.iris.
SELECT * FROM pgml.load_dataset('iris');

-- A first model; progress arrives as NOTICE lines.
SELECT * FROM pgml.train('iris', 'classification', 'pgml.iris', 'target', algorithm => 'lightgbm');

-- Another algorithm on the same snapshot (a NULL relation reuses it).
SELECT * FROM pgml.train('iris', algorithm => 'linear');

-- Hyperparameter search with 3-fold cross-validation; the winner is refit
-- on the whole training split and its search results kept in the metrics.
SELECT * FROM pgml.train('iris', algorithm => 'lightgbm',
    search => 'grid',
    search_params => '{"num_leaves": [4, 15], "n_estimators": [20, 100]}',
    search_args => '{"cv": 3}');

SELECT id, algorithm, round((metrics->>'f1')::numeric, 3) AS f1,
       round((metrics->>'accuracy')::numeric, 3) AS accuracy
FROM pgml.models ORDER BY id;

-- Choose what serves predictions.
SELECT * FROM pgml.deploy('iris', 'best_score');
SELECT * FROM pgml.deployed_models;

-- Predictions inside ordinary queries.
SELECT sepal_length, petal_length, target,
       pgml.predict('iris', ARRAY[sepal_length, sepal_width, petal_length, petal_width]) AS predicted,
       pgml.predict_proba('iris', ARRAY[sepal_length, sepal_width, petal_length, petal_width]) AS probabilities
FROM pgml.iris
ORDER BY random()
LIMIT 5;
