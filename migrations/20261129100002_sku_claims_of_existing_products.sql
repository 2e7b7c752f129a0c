-- sku claims are now written in the same transaction as the product's creation (and moved in
-- the same transaction as its sku change), so a claim always belongs to an existing product.
-- drop claims left behind by products that never came to exist under the earlier two-step flow.
delete from product_sku_claims c
 where not exists (select 1 from events e
                    where e.aggregate_type = 'Product'
                      and e.aggregate_id = c.product_id::text);
