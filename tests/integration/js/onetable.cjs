// A OneTable app in the cloud, for the interoperability tests: it reads and writes the
// table Ferry devices sync with, through the npm dynamodb-onetable package.
//
//   node onetable.cjs ENDPOINT TABLE SCHEMA.json get MODEL JSON     prints the item as JSON
//   node onetable.cjs ENDPOINT TABLE SCHEMA.json create MODEL JSON  prints the item as JSON
//
// Credentials and region come from the environment (AWS_ACCESS_KEY_ID, ...).
const { DynamoDBClient } = require('@aws-sdk/client-dynamodb')
const { Table } = require('dynamodb-onetable')
const fs = require('fs')

async function main() {
    const [endpoint, name, schemaFile, command, model, json] = process.argv.slice(2)
    const schema = JSON.parse(fs.readFileSync(schemaFile, 'utf8'))
    const client = new DynamoDBClient({ endpoint, region: process.env.AWS_REGION || 'us-east-1' })
    // OneTable's own key configuration: {primary: {cipher, password}}.
    const crypto = process.env.ONETABLE_CRYPTO ? JSON.parse(process.env.ONETABLE_CRYPTO) : undefined
    const table = new Table({ client, name, schema, partial: false, crypto })
    const Model = table.getModel(model)
    const props = JSON.parse(json)
    let item
    if (command === 'get') {
        item = await Model.get(props, { hidden: true })
    } else if (command === 'create') {
        item = await Model.create(props)
    } else {
        throw new Error(`unknown command ${command}`)
    }
    process.stdout.write(JSON.stringify(item === undefined ? null : item) + '\n')
}

main().catch((err) => {
    process.stderr.write(`OneTableError: ${err.message}\n`)
    process.exit(1)
})
